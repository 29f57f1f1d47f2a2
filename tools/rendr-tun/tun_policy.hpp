// SPDX-License-Identifier: Apache-2.0
// tun_policy: who carries an application flow and where it lands (docs/tun-ingress.md "Flow
// decisions"). Pure values and parsers, no I/O:
//
//   ingress  FlowDecisionHook: identity -> deny, or the peers (one engine path each) to carry
//            it. The CLI's hook is an IngressConfig read from `--config FILE`:
//              match [dst CIDR] [port P|P-Q] [proto tcp|udp] -> peer HOST:PORT [...]
//              deny  [dst CIDR] [port P|P-Q] [proto tcp|udp]
//            first matching line wins; a flow that matches no line is denied.
//   egress   EgressHook: identity -> deny (with a RefusalCode), redirect to another address,
//            or connect to the identity's destination. The CLI's hook is an EgressPolicy from
//            `--deny SEL`, `--redirect SEL=HOST:PORT` and `--allow SEL` (SEL = [tcp:|udp:]
//            CIDR[:PORTS], "[v6 CIDR]:PORTS" for IPv6, or any): deny rules first, then redirects, then allows; a
//            destination no rule allows is refused with flow_denied (default deny).
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/engine/types.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rendr::tun {

// Cidr: an address prefix of one family.
struct Cidr {
  IpFamily family = IpFamily::v4;
  std::array<std::uint8_t, 16> addr{};
  int bits = 0;
  [[nodiscard]] bool contains(std::uint8_t id_family, const std::array<std::uint8_t, 16>& a) const;
};
// parse_cidr accepts "10.0.0.0/8", "10.0.0.1" (a /32), "fd00::/16", "fd00::1" (a /128); the
// address's bits beyond the prefix must be 0. Error: invalid_argument naming the problem.
[[nodiscard]] Result<Cidr> parse_cidr(std::string_view text);

// Selector: a protocol, a destination address range and port range (each optional = any).
struct Selector {
  std::optional<std::uint8_t> proto;  // IPPROTO_TCP or IPPROTO_UDP
  std::optional<Cidr> dst;
  std::uint16_t port_lo = 0;
  std::uint16_t port_hi = 65535;
  [[nodiscard]] bool matches(const engine::L3Identity& id) const;
};
// parse_selector parses the CLI form [PROTO:]CIDR[:PORTS] / [PROTO:][V6CIDR]:PORTS /
// [PROTO:]any / PROTO, with PROTO tcp or udp (none: both) and PORTS P or P-Q
// ("tcp:198.18.0.0/24:80", "udp:[fd00::/16]:53", "udp"). Error: invalid_argument.
[[nodiscard]] Result<Selector> parse_selector(std::string_view text);
// parse_proto: "tcp" -> 6, "udp" -> 17. Error: invalid_argument.
[[nodiscard]] Result<std::uint8_t> parse_proto(std::string_view text);

// --- ingress ---
struct FlowDecision {
  bool deny = false;
  std::vector<std::string> peers;  // HOST:PORT of the engine paths (used when !deny)
};
using FlowDecisionHook = std::function<FlowDecision(const engine::L3Identity&)>;

struct IngressRule {
  Selector sel;
  bool deny = false;
  std::vector<std::string> peers;
  int line = 0;
};
struct IngressConfig {
  std::vector<IngressRule> rules;
  // decide: the first rule matching |id|; none matches: deny.
  [[nodiscard]] FlowDecision decide(const engine::L3Identity& id) const;
};
// parse_ingress_config reads the config text; |name| prefixes errors ("FILE:LINE: ...").
// Error: invalid_argument with the first bad line.
[[nodiscard]] Result<IngressConfig> parse_ingress_config(std::string_view text,
                                                         std::string_view name);

// --- egress ---
struct EgressDecision {
  enum class Kind : std::uint8_t { connect, redirect, deny } kind = Kind::connect;
  Endpoint to;  // redirect: where to connect instead
  engine::RefusalCode code = engine::RefusalCode::flow_denied;  // deny
  std::string detail;                                           // deny
};
using EgressHook = std::function<EgressDecision(const engine::L3Identity&)>;

struct EgressPolicy {
  std::vector<Selector> deny;
  std::vector<std::pair<Selector, Endpoint>> redirect;
  std::vector<Selector> allow;
  // add parses one CLI option: |kind| is "allow", "deny" or "redirect" (SEL=HOST:PORT).
  [[nodiscard]] Status add(std::string_view kind, std::string_view arg);
  // decide: deny rules, then redirects, then allows; nothing matched: deny (flow_denied).
  [[nodiscard]] EgressDecision decide(const engine::L3Identity& id) const;
};

}  // namespace rendr::tun
