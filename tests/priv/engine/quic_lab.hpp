// SPDX-License-Identifier: Apache-2.0
// Quic paths in the engine rig (tests/priv/engine): a quic listener in the server namespace,
// DialOptions for one DATAGRAM path through the lab's path |i|, and a dialled pair (the client
// from the client namespace, the server side from the listener's accept).
#pragma once

#include "bench/engine_bench_rig.hpp"
#include "support/require_result.hpp"
#include "unit/engine/api_helpers.hpp"
#include "unit/engine/quic_certs.hpp"

#include <catch2/catch.hpp>

#include <memory>
#include <type_traits>

namespace rendr::test::quic_lab {

using namespace std::chrono_literals;

inline Result<ListenerPtr> listen(bench::EngineRig& rig, const QuicCerts& k,
                                  const engine::FlowConfig& cfg) {
  QuicTls t;
  t.ca = k.ca();
  t.cert = k.cert("server");
  t.key = k.key("server");
  t.initial_rtt = 5ms;
  ListenOptions o;
  o.flow = cfg;
  Result<ListenerPtr> out = make_error(std::errc::invalid_argument, "unset");
  auto st = rig.in_server([&]() -> Status {
    out = listen_quic("0.0.0.0:0", t, o);
    return {};
  });
  if (!st) {
    return std::move(st).take_error();
  }
  return out;
}

inline DialOptions dial_opts(const QuicCerts& k, int path, std::uint16_t port,
                             const engine::FlowConfig& cfg) {
  PathSpec p = bench::EngineRig::path(path, port, "quic");
  p.opts = {{"ca", k.ca()},           {"cert", k.cert("client")},
            {"key", k.key("client")}, {"server_name", "server"},
            {"mode", "datagram"},     {"initial_rtt_ms", "5"}};
  DialOptions o;
  static_cast<engine::FlowConfig&>(o) = cfg;
  o.paths = {p};
  o.ledger_max_bytes = 2U << 20;
  return o;
}

template <typename C>
struct Pair {
  std::unique_ptr<Dialer> dialer;
  C client;
  C server;
};

template <typename C>
Pair<C> connect(bench::EngineRig& rig, Listener& l, DialOptions o) {
  constexpr bool kPacket = std::is_same_v<C, PacketConnPtr>;
  Pair<C> p;
  auto d = Dialer::create(std::move(o));
  REQUIRE_OK(d);
  p.dialer = std::move(*d);
  Result<C> c = make_error(std::errc::invalid_argument, "unset");
  REQUIRE_OK(rig.in_client([&]() -> Status {
    if constexpr (kPacket) {
      c = p.dialer->dial_packet();
    } else {
      c = p.dialer->dial();
    }
    return {};
  }));
  REQUIRE_OK(c);
  p.client = std::move(*c);
  Result<C> s = api::accept_as<C>(l);
  REQUIRE_OK(s);
  p.server = std::move(*s);
  return p;
}

}  // namespace rendr::test::quic_lab
