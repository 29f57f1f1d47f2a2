// SPDX-License-Identifier: Apache-2.0
#include "flow_key.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace rendr::ebpf::detail {
namespace {

bool v4_mapped(const Endpoint& e) {
  static constexpr std::uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return e.family == IpFamily::v6 && std::memcmp(e.addr.data(), kPrefix, sizeof kPrefix) == 0;
}

Endpoint endpoint_from(std::uint8_t family, const std::uint8_t* addr, std::uint16_t port_be) {
  Endpoint e;
  e.family = family == RENDR_FAMILY_V6 ? IpFamily::v6 : IpFamily::v4;
  std::copy_n(addr, e.family == IpFamily::v6 ? 16 : 4, e.addr.begin());
  e.port = ntohs(port_be);
  return e;
}

}  // namespace

WireAddress wire_address(const Endpoint& e) {
  WireAddress w;
  if (e.family == IpFamily::v4) {
    std::copy_n(e.addr.begin(), 4, w.addr.begin());
  } else if (v4_mapped(e)) {
    std::copy_n(e.addr.begin() + 12, 4, w.addr.begin());
  } else {
    w.family = RENDR_FAMILY_V6;
    w.addr = e.addr;
  }
  return w;
}

Result<rendr_flow_key> flow_key(const Endpoint& src, const Endpoint& dst) {
  WireAddress s = wire_address(src);
  WireAddress d = wire_address(dst);
  if (s.family != d.family) {
    return make_error(std::errc::invalid_argument,
                      "flow " + src.to_string() + " -> " + dst.to_string() +
                          ": address families differ");
  }
  rendr_flow_key k{};
  k.family = s.family;
  k.proto = IPPROTO_TCP;
  k.src_port = htons(src.port);
  k.dst_port = htons(dst.port);
  std::memcpy(k.src_addr, s.addr.data(), sizeof k.src_addr);
  std::memcpy(k.dst_addr, d.addr.data(), sizeof k.dst_addr);
  return k;
}

Result<rendr_flow_key> freeze_key(const FourTuple& t) {
  auto k = flow_key(t.local, t.remote);
  if (k) {
    rendr_flow_key_normalise(&*k);
  }
  return k;
}

Result<rendr_flow_key> steer_key(const FourTuple& t) { return flow_key(t.remote, t.local); }

FourTuple tuple_from_steer_key(const rendr_flow_key& k) {
  FourTuple t;
  t.remote = endpoint_from(k.family, k.src_addr, k.src_port);
  t.local = endpoint_from(k.family, k.dst_addr, k.dst_port);
  return t;
}

}  // namespace rendr::ebpf::detail
