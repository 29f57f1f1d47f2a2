// SPDX-License-Identifier: Apache-2.0
// Helpers of the engine's API tests over loopback (api_test.cpp, quic_net_test.cpp): path
// specs, fast probing configs, a dialled pair, a pattern writer thread and a verifying reader,
// a numbered packet writer with an exact-set reader (PacketRun).
#pragma once

#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/listener.hpp>
#include <rendr/engine/stats_json.hpp>

#include "support/pattern.hpp"
#include "support/require_result.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <thread>
#include <type_traits>

namespace rendr::test::api {

using namespace std::chrono_literals;


inline PathSpec tcp_path(const Listener& l, std::string name = {}) {
  PathSpec p;
  p.transport = "tcp";
  p.address = l.local_address();
  p.name = std::move(name);
  return p;
}

inline PathSpec udp_path(const Listener& l) {
  PathSpec p;
  p.transport = "udpflow";
  p.address = l.local_address();
  return p;
}

// Fast probing so the tests settle quickly on loopback.
inline engine::FlowConfig fast_cfg() {
  engine::FlowConfig c;
  c.probe_interval = 50ms;
  c.fresh_min = 200ms;
  return c;
}

inline DialOptions dial_opts(std::vector<PathSpec> paths) {
  DialOptions o;
  static_cast<engine::FlowConfig&>(o) = fast_cfg();
  o.paths = std::move(paths);
  // A 1 MiB send window: the writers are paced by the carriers, so actions taken at a read
  // offset happen while data is still in flight.
  o.ledger_max_bytes = 1U << 20;
  return o;
}

inline ListenOptions listen_opts() {
  ListenOptions o;
  o.flow = fast_cfg();
  return o;
}

// Dialed: a Dialer, its flow, and the listener's end of it - what most tests start with.
// C = ConnPtr (stream flow) or PacketConnPtr (packet flow).
template <typename C>
struct Dialed {
  Result<std::unique_ptr<Dialer>> d;
  Result<C> c;
  Result<C> s;
};

// accept_as: the listener's next flow of kind C (stream or packet), waiting up to 5 s.
template <typename C>
Result<C> accept_as(Listener& l) {
  if constexpr (std::is_same_v<C, PacketConnPtr>) {
    return l.accept_packet(deadline_in(std::chrono::seconds(5)));
  } else {
    return l.accept(deadline_in(std::chrono::seconds(5)));
  }
}

template <typename C = ConnPtr>
Dialed<C> dial_pair(Listener& l, DialOptions o) {
  constexpr bool kPacket = std::is_same_v<C, PacketConnPtr>;
  auto d = Dialer::create(std::move(o));
  REQUIRE_OK(d);
  Result<C> c = [&] {
    if constexpr (kPacket) {
      return (*d)->dial_packet();
    } else {
      return (*d)->dial();
    }
  }();
  REQUIRE_OK(c);
  Result<C> s = accept_as<C>(l);
  REQUIRE_OK(s);
  return Dialed<C>{std::move(d), std::move(c), std::move(s)};
}

// Writes |total| pattern bytes on |c| from a thread while the caller reads them elsewhere.
struct Writer {
  Writer(Conn& c, std::uint64_t total, std::uint32_t seed)
      : t([&c, total, seed, this] {
          Pattern p(seed);
          std::vector<std::byte> buf(256 * 1024);
          std::uint64_t off = 0;
          while (off < total) {
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - off));
            p.fill(off, std::span<std::byte>(buf.data(), n));
            auto st = c.write(std::span<const std::byte>(buf.data(), n), deadline_in(30s));
            if (!st) {
              error = st.error().message();
              return;
            }
            off += n;
          }
        }) {}
  ~Writer() {
    if (t.joinable()) {
      t.join();
    }
  }
  std::string error;
  std::thread t;
};

// read_verify reads exactly |total| bytes and checks them against the pattern; |at| is called
// with the offset after each read (for mid-transfer actions).
inline void read_verify(Conn& c, std::uint64_t total, std::uint32_t seed,
                 const std::function<void(std::uint64_t)>& at = {}) {
  Pattern p(seed);
  std::vector<std::byte> buf(128 * 1024);
  std::uint64_t off = 0;
  while (off < total) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - off));
    auto r = c.read_some(std::span<std::byte>(buf.data(), want), deadline_in(30s));
    if (!r) {
      // The reader's view of the flow says which side stalled (ledger, paths, last ACK).
      INFO("reader at " << off << " of " << total << ": " << engine::flow_stats_json(c.stats()));
      REQUIRE_OK(r);
    }
    REQUIRE(*r > 0);
    REQUIRE(p.mismatch(off, std::span<const std::byte>(buf.data(), *r)) == -1);
    off += *r;
    if (at) {
      at(off);
    }
  }
}

// transfer_killing_active writes |total| pattern bytes client -> server and kills the client's
// active path once a third has been read and verified. Returns the writer's error ("" = none)
// and whether the kill happened.
struct KilledTransfer {
  std::string writer_error;
  bool killed = false;
};
inline KilledTransfer transfer_killing_active(Conn& client, Conn& server, std::uint64_t total,
                                       std::uint32_t seed) {
  KilledTransfer k;
  Writer up(client, total, seed);
  read_verify(server, total, seed, [&](std::uint64_t off) {
    if (!k.killed && off >= total / 3) {
      k.killed = true;
      client.kill_path_for_test(client.active_path());
    }
  });
  up.t.join();
  k.writer_error = up.error;
  return k;
}

// PacketRun: |count| packets of |size| bytes, numbered in their first 4 bytes, written from a
// thread; the caller reads them and counts each id.
struct PacketRun {
  PacketRun(PacketConn& c, int count, std::size_t size)
      : seen(static_cast<std::size_t>(count), 0), t([&c, count, size, this] {
          std::vector<std::byte> p(size);
          for (int i = 0; i < count; ++i) {
            std::memcpy(p.data(), &i, sizeof i);
            p[size - 1] = static_cast<std::byte>(i & 0xff);
            auto st = c.write(p, deadline_in(30s));
            if (!st) {
              error = st.error().message();
              return;
            }
            written = i + 1;
          }
        }) {}
  ~PacketRun() {
    if (t.joinable()) {
      t.join();
    }
  }
  // read_all reads |count| packets; |at| is called after each with the number read.
  void read_all(PacketConn& s, std::size_t size, const std::function<void(int)>& at = {}) {
    std::vector<std::byte> in;
    for (std::size_t n = 0; n < seen.size(); ++n) {
      auto r = s.read(in, deadline_in(30s));
      if (!r || !*r) {
        INFO("reader at " << n << ", writer at " << written << " " << error << " "
                           << engine::flow_stats_json(s.stats()));
        REQUIRE_OK(r);
        REQUIRE(*r);
      }
      REQUIRE(in.size() == size);
      int id = 0;
      std::memcpy(&id, in.data(), sizeof id);
      REQUIRE(id >= 0);
      REQUIRE(static_cast<std::size_t>(id) < seen.size());
      REQUIRE(in[size - 1] == static_cast<std::byte>(id & 0xff));
      seen[static_cast<std::size_t>(id)] += 1;
      if (at) {
        at(static_cast<int>(n + 1));
      }
    }
  }
  [[nodiscard]] long missing() const { return std::count(seen.begin(), seen.end(), 0); }
  [[nodiscard]] long dups() const {
    return std::count_if(seen.begin(), seen.end(), [](int n) { return n > 1; });
  }
  std::vector<int> seen;
  std::string error;
  std::atomic<int> written{0};
  std::thread t;
};

}  // namespace rendr::test::api
