// SPDX-License-Identifier: Apache-2.0
// Limits and helpers shared by the driver_*.cpp files (private). The FlowDriver is split by role:
//   driver.cpp           construction, carrier attach, the service loop (pump), timer, close,
//                        eviction, migrate callbacks, stats
//   driver_carriers.cpp  carrier I/O: reads into the core, writes (gathered or per datagram),
//                        carrier failure
//   driver_app.cpp       the application side: blocking reads and writes, the asio face
//   driver_dial.cpp      dialling carriers, add_path, waiting for the handshake, re-dial
//   io_runtime.cpp       IoRuntime: the io_context and its thread
#pragma once

#include "driver.hpp"

#include <rendr/engine/errors.hpp>

#include <cstddef>
#include <system_error>

namespace rendr::detail {

using engine::Clock;
using engine::FlowState;
using engine::PathId;

// Output chunk per stream write: large enough for throughput, small enough that the stall
// detector sees a blocked carrier (a write only completes when the socket took it).
inline constexpr std::size_t kStreamChunk = 128 * 1024;
inline constexpr std::size_t kStreamRoom = kStreamChunk + engine::kMaxStreamFrame + 2;
inline constexpr int kDatagramBurst = 256;
// A stream read that drained its carrier with fewer bytes than this lets go of the receive
// chunk and reads next into the slot's small buffer (an idle path holds no receive memory);
// after a larger read (bulk data) the next read goes into the chunk at once (the small buffer
// would add a copy and a read per chunk).
inline constexpr std::size_t kStreamIdleRead = 16 * 1024;
// After close() on a flow that ended, how long a carrier may take to hand the peer the flow's
// last frames (its BYE or REFUSE, the terminal ACK) before it is closed anyway.
inline constexpr std::chrono::milliseconds kDrainCap{5000};
// How long close() waits for an ended flow's last frames to reach its carriers (a starved io
// thread), before it lets go of the flow either way.
inline constexpr std::chrono::milliseconds kCloseDrainWait{500};
// A write_some publishes at most this much at once (its copy runs before the io thread may
// send any of it).
inline constexpr std::size_t kAppSlice = 256 * 1024;

// Timers are armed on this grid (FlowDriver::arm_timer_locked, QuicLink::arm_timer).
inline constexpr std::chrono::milliseconds kTimerTick{1};

inline engine::TimePoint round_up_to_tick(engine::TimePoint t) {
  using D = engine::TimePoint::duration;
  const D tick = std::chrono::duration_cast<D>(kTimerTick);
  if (t >= engine::TimePoint::max() - tick) {
    return t;
  }
  const D d = t.time_since_epoch();
  return engine::TimePoint((d + tick - D(1)) / tick * tick);
}

inline bool would_block(std::error_code ec) {
  return ec == std::errc::operation_would_block || ec == std::errc::resource_unavailable_try_again;
}

inline Error timed_out(const char* what) { return make_error(std::errc::timed_out, what); }

}  // namespace rendr::detail
