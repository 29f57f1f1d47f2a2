// SPDX-License-Identifier: Apache-2.0
// Flow-core tests' shared pieces over FakeNet: a pattern transfer checked byte for byte at its
// offset, wiring it to a FakeNet, counting events, waiting for ready paths.
#pragma once

#include "fake_net.hpp"

#include <rendr/engine/core/flow.hpp>

#include "support/pattern.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace rendr::engine::test {

using namespace std::chrono_literals;

// fast_probe_config with 16 KiB frames.
inline FlowConfig small_frame_config() {
  FlowConfig c = fast_probe_config();
  c.max_payload = 16 * 1024;
  return c;
}

// Transfer writes |total| pattern bytes on |from| and reads/verifies them on |to|.
struct Transfer {
  explicit Transfer(std::uint64_t n, std::uint32_t seed = 7) : pattern(seed), total(n) {}
  rendr::test::Pattern pattern;
  std::uint64_t total;
  std::uint64_t written = 0;
  std::uint64_t read = 0;
  bool eof = false;
  long long mismatch_at = -1;
  bool read_enabled = true;
  std::optional<Error> read_error;

  void write_some(FlowCore& c, TimePoint now) {
    std::vector<std::byte> buf(64 * 1024);
    while (written < total) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - written));
      pattern.fill(written, std::span(buf).first(n));
      auto r = c.write(std::span(buf).first(n), now);
      INFO((r.ok() ? std::string("-") : r.error().message()));
      REQUIRE(r.ok());
      if (*r == 0) {
        break;
      }
      written += *r;
    }
  }
  void read_some(FlowCore& c, TimePoint now) {
    if (!read_enabled) {
      return;
    }
    std::vector<std::byte> buf(48 * 1024);
    while (true) {
      auto r = c.read(buf, now);
      if (!r.ok()) {
        read_error = r.error();
        return;
      }
      if (r->eof) {
        eof = true;
        return;
      }
      if (r->bytes == 0) {
        return;
      }
      const auto got = std::span(buf).first(r->bytes);
      if (mismatch_at < 0) {
        const long long m = pattern.mismatch(read, got);
        if (m >= 0) {
          mismatch_at = static_cast<long long>(read) + m;
        }
      }
      read += r->bytes;
    }
  }
  [[nodiscard]] bool complete() const { return read == total && mismatch_at < 0; }
};

template <class Ev>
std::size_t count_events(const std::vector<FlowEvent>& evs) {
  return static_cast<std::size_t>(
      std::count_if(evs.begin(), evs.end(), [](const FlowEvent& e) { return std::holds_alternative<Ev>(e); }));
}

// all_ready runs until the client has |n| ready paths.
inline bool all_ready(FakeNet& net, std::size_t n) {
  return net.run_until(
      [&] {
        const auto st = net.client.stats();
        return st.paths.size() == n &&
               std::all_of(st.paths.begin(), st.paths.end(),
                           [](const PathInfo& p) { return p.state == PathState::ready; });
      },
      2s);
}

inline void wire_transfer(FakeNet& net, Transfer& t) {
  net.app = [&t](FakeNet& n) {
    if (n.client.state() != FlowState::init) {
      t.write_some(n.client, n.now);
    }
    if (n.server) {
      t.read_some(*n.server, n.now);
    }
  };
}


}  // namespace rendr::engine::test
