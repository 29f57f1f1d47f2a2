// SPDX-License-Identifier: Apache-2.0
// Drain before the freeze: once a batch's sockets are exported (their servers write no more),
// the kernel still sends what their send queues hold while the peers' windows allow. Waiting a
// little for that before the freeze shrinks what the checkpoint must carry - and so the ship,
// the restore and the time the flows stay frozen - at no cost to the peers: the flows are not
// frozen while they drain. DrainPlan decides, from the queued bytes it is shown, when to stop
// waiting; I/O-free (the agent polls SIOCOUTQ and feeds it).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace rendr::agents {

struct DrainOptions {
  std::chrono::milliseconds max{500};        // stop waiting after this long (0: no drain)
  std::chrono::milliseconds stalled{10};     // stop when nothing drained for this long
  std::uint64_t target_per_flow = 64 * 1024;  // stop when every flow holds this little
  std::chrono::milliseconds poll{1};         // how often the shell looks again
};

enum class DrainStop { drained, stalled, timed_out, disabled };

[[nodiscard]] const char* to_string(DrainStop s);

class DrainPlan {
 public:
  using Clock = std::chrono::steady_clock;
  DrainPlan(DrainOptions o, std::size_t flows, Clock::time_point start);
  // observe takes the send-queue bytes of every flow together at |now|; returns why to stop,
  // or nullopt: look again after options().poll.
  [[nodiscard]] std::optional<DrainStop> observe(std::uint64_t queued, Clock::time_point now);
  [[nodiscard]] const DrainOptions& options() const { return o_; }
  [[nodiscard]] std::uint64_t first() const { return first_; }

 private:
  DrainOptions o_;
  std::size_t flows_;
  Clock::time_point start_;
  Clock::time_point last_progress_;
  std::uint64_t least_ = UINT64_MAX;
  std::uint64_t first_ = 0;
  bool seen_ = false;
};

}  // namespace rendr::agents
