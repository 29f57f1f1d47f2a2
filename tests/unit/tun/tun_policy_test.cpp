// SPDX-License-Identifier: Apache-2.0
// rendr-tun flow decisions (docs/tun-ingress.md "Flow decisions"): the ingress config parser
// (rules, first match wins, default deny, errors with file and line) and the egress policy
// (--deny before --redirect before --allow, default deny).
#include "rendr-tun/tun_policy.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace rendr;
using namespace rendr::tun;

namespace {

engine::L3Identity tcp_to(const std::string& dst) {
  const char* src = dst[0] == '[' ? "[fd00::77]:40000" : "10.77.0.1:40000";
  auto id = engine::make_l3_identity(6, src, dst);
  REQUIRE(id.ok());
  return *id;
}

engine::L3Identity udp_to(const std::string& dst) {
  const char* src = dst[0] == '[' ? "[fd00::77]:40000" : "10.77.0.1:40000";
  auto id = engine::make_l3_identity(17, src, dst);
  REQUIRE(id.ok());
  return *id;
}

std::string parse_error(const std::string& text) {
  auto c = parse_ingress_config(text, "t.conf");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == std::make_error_code(std::errc::invalid_argument));
  return c.error().context;
}

}  // namespace

TEST_CASE("tun config: rules match in order and unmatched flows are denied", "[tun][config]") {
  const std::string text =
      "# rendr-tun ingress rules\n"
      "deny dst 198.18.0.66/32            # a denied host\n"
      "match dst 198.18.0.0/24 port 443 -> peer 10.88.0.2:7000 peer 10.89.0.2:7000\n"
      "\n"
      "match dst 198.18.0.0/16 port 8000-8099 -> peer 10.88.0.2:7000\n"
      "deny port 22\n"
      "match dst fd00::/16 -> peer [fd00::2]:7000\n";
  auto c = parse_ingress_config(text, "t.conf");
  REQUIRE(c.ok());
  REQUIRE(c->rules.size() == 5);
  CHECK(c->rules[1].line == 3);
  auto d = c->decide(tcp_to("198.18.0.10:443"));
  CHECK_FALSE(d.deny);
  CHECK(d.peers == std::vector<std::string>{"10.88.0.2:7000", "10.89.0.2:7000"});
  CHECK(c->decide(tcp_to("198.18.0.66:443")).deny);  // the first rule wins
  d = c->decide(tcp_to("198.18.7.1:8080"));
  CHECK_FALSE(d.deny);
  CHECK(d.peers == std::vector<std::string>{"10.88.0.2:7000"});
  CHECK(c->decide(tcp_to("198.18.7.1:8100")).deny);  // no rule: denied
  CHECK(c->decide(tcp_to("192.0.2.1:22")).deny);
  CHECK(c->decide(tcp_to("192.0.2.1:80")).deny);
  CHECK_FALSE(c->decide(tcp_to("[fd00::9]:80")).deny);
  CHECK(c->decide(tcp_to("[fd01::9]:80")).deny);
  auto any = parse_ingress_config("match any -> peer 127.0.0.1:7000", "x");
  REQUIRE(any.ok());
  CHECK_FALSE(any->decide(tcp_to("203.0.113.1:1")).deny);
}

TEST_CASE("tun config: bad input is refused with its file and line", "[tun][config]") {
  CHECK(parse_error("match dst 10.0.0.0/8 -> peer 1.2.3.4:5\nallow dst 10.0.0.0/8\n")
            .find("t.conf:2: expected 'match' or 'deny', got 'allow'") == 0);
  CHECK(parse_error("\n\nmatch dst 10.0.0.0/33 -> peer 1.2.3.4:5\n").find("t.conf:3: ") == 0);
  CHECK(parse_error("match dst 10.0.0.1/8 -> peer 1.2.3.4:5\n").find("host bits") !=
        std::string::npos);
  CHECK(parse_error("match dst 10.0.0.0/8 port 70000 -> peer 1.2.3.4:5\n").find("bad port") !=
        std::string::npos);
  CHECK(parse_error("match port 90-80 -> peer 1.2.3.4:5\n").find("empty") != std::string::npos);
  CHECK(parse_error("match dst 10.0.0.0/8\n").find("needs '-> peer") != std::string::npos);
  CHECK(parse_error("match dst 10.0.0.0/8 ->\n").find("at least one") != std::string::npos);
  CHECK(parse_error("match dst 10.0.0.0/8 -> peer nowhere\n").find("bad peer 'nowhere'") !=
        std::string::npos);
  CHECK(parse_error("match dst 10.0.0.0/8 -> host 1.2.3.4:5\n").find("expected 'peer") !=
        std::string::npos);
  CHECK(parse_error("deny dst 10.0.0.0/8 -> peer 1.2.3.4:5\n").find("takes no") !=
        std::string::npos);
  CHECK(parse_error("deny\n").find("no selector") != std::string::npos);
  CHECK(parse_error("deny dst\n").find("'dst' needs a value") != std::string::npos);
  CHECK(parse_error("deny dst 10.0.0.0/8 dst 10.0.0.0/8\n").find("unexpected 'dst'") !=
        std::string::npos);
  CHECK(parse_error("deny any port 1\n").find("'any' with") != std::string::npos);
  CHECK(parse_error("# only comments\n\n").find("no rules") != std::string::npos);
}

TEST_CASE("tun egress policy: deny, then redirect, then allow, default deny", "[tun][egress]") {
  EgressPolicy p;
  REQUIRE(p.add("allow", "198.18.0.0/24").ok());
  REQUIRE(p.add("deny", "198.18.0.66:1-1024").ok());
  REQUIRE(p.add("redirect", "198.18.0.0/24:9999=127.0.0.1:8080").ok());
  REQUIRE(p.add("allow", "[fd00::/16]:443").ok());
  CHECK(p.decide(tcp_to("198.18.0.10:80")).kind == EgressDecision::Kind::connect);
  const auto denied = p.decide(tcp_to("198.18.0.66:80"));
  CHECK(denied.kind == EgressDecision::Kind::deny);
  CHECK(denied.code == engine::RefusalCode::flow_denied);
  CHECK(p.decide(tcp_to("198.18.0.66:8080")).kind == EgressDecision::Kind::connect);
  const auto r = p.decide(tcp_to("198.18.0.10:9999"));
  REQUIRE(r.kind == EgressDecision::Kind::redirect);
  CHECK(r.to.to_string() == "127.0.0.1:8080");
  CHECK(p.decide(tcp_to("198.18.1.10:80")).kind == EgressDecision::Kind::deny);
  CHECK(p.decide(tcp_to("[fd00::1]:443")).kind == EgressDecision::Kind::connect);
  CHECK(p.decide(tcp_to("[fd00::1]:80")).kind == EgressDecision::Kind::deny);
  CHECK(EgressPolicy{}.decide(tcp_to("198.18.0.10:80")).kind == EgressDecision::Kind::deny);
  // Bad options name themselves.
  auto bad = p.add("allow", "198.18.0.0/24:http");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().context.find("--allow 198.18.0.0/24:http: bad port") == 0);
  CHECK_FALSE(p.add("allow", "fd00::/16:443").ok());  // IPv6 needs brackets
  CHECK_FALSE(p.add("redirect", "198.18.0.0/24").ok());
  CHECK_FALSE(p.add("redirect", "any=nowhere").ok());
  CHECK(p.add("allow", "any").ok());
  CHECK(p.decide(tcp_to("203.0.113.9:1")).kind == EgressDecision::Kind::connect);
}

TEST_CASE("tun config: proto selects tcp or udp and no proto matches both", "[tun][config]") {
  const std::string text =
      "match dst 198.18.0.10 proto tcp -> peer 10.88.0.2:7000\n"
      "deny  dst 198.18.0.10 proto udp\n"
      "match proto udp port 53 -> peer 10.89.0.2:7000\n"
      "deny  proto udp\n"
      "match dst 198.18.0.0/24 -> peer 10.88.0.2:7000 peer 10.89.0.2:7000\n";
  auto c = parse_ingress_config(text, "t.conf");
  REQUIRE(c.ok());
  REQUIRE(c->rules.size() == 5);
  CHECK(c->rules[0].sel.proto == std::uint8_t{6});
  CHECK(c->rules[1].sel.proto == std::uint8_t{17});
  CHECK_FALSE(c->rules[4].sel.proto.has_value());
  // TCP to .10 is carried, UDP to it denied.
  auto d = c->decide(tcp_to("198.18.0.10:8080"));
  CHECK_FALSE(d.deny);
  CHECK(d.peers == std::vector<std::string>{"10.88.0.2:7000"});
  CHECK(c->decide(udp_to("198.18.0.10:5300")).deny);
  // proto alone, with a port: UDP to port 53 anywhere goes to the second peer.
  d = c->decide(udp_to("192.0.2.1:53"));
  CHECK_FALSE(d.deny);
  CHECK(d.peers == std::vector<std::string>{"10.89.0.2:7000"});
  CHECK(c->decide(udp_to("198.18.0.11:5300")).deny);  // 'deny proto udp' comes first
  // No proto: both protocols (today's configs keep working).
  d = c->decide(tcp_to("198.18.0.11:80"));
  CHECK_FALSE(d.deny);
  CHECK(d.peers.size() == 2);
  auto both = parse_ingress_config("match dst 198.18.0.0/24 -> peer 10.88.0.2:7000\n", "b");
  REQUIRE(both.ok());
  CHECK_FALSE(both->decide(tcp_to("198.18.0.9:1")).deny);
  CHECK_FALSE(both->decide(udp_to("198.18.0.9:1")).deny);
  CHECK(both->decide(udp_to("198.18.1.9:1")).deny);
  // Errors name the line.
  CHECK(parse_error("match any -> peer 1.2.3.4:5\ndeny proto icmp\n")
            .find("t.conf:2: bad protocol 'icmp' (tcp or udp)") == 0);
  CHECK(parse_error("deny proto\n").find("t.conf:1: 'proto' needs a value") == 0);
  CHECK(parse_error("deny proto tcp proto udp\n").find("t.conf:1: unexpected 'proto'") == 0);
  CHECK(parse_error("deny any proto tcp\n").find("t.conf:1: 'any' with dst, port or proto") == 0);
}

TEST_CASE("tun egress policy: a tcp: or udp: prefix selects the protocol", "[tun][egress]") {
  EgressPolicy p;
  REQUIRE(p.add("allow", "tcp:198.18.0.0/24").ok());
  REQUIRE(p.add("allow", "udp:198.18.0.0/24:53").ok());
  REQUIRE(p.add("deny", "udp:[fd00::/16]:1-1024").ok());
  REQUIRE(p.add("allow", "[fd00::/16]:1-2000").ok());
  REQUIRE(p.add("redirect", "udp:198.18.1.0/24:5300=127.0.0.1:5353").ok());
  REQUIRE(p.add("allow", "udp").ok());  // bare: every UDP destination
  REQUIRE(p.add("deny", "tcp:any:22").ok());
  CHECK(p.decide(tcp_to("198.18.0.10:80")).kind == EgressDecision::Kind::connect);
  CHECK(p.decide(tcp_to("198.18.0.10:22")).kind == EgressDecision::Kind::deny);
  CHECK(p.decide(udp_to("198.18.0.10:22")).kind == EgressDecision::Kind::connect);
  CHECK(p.decide(tcp_to("198.18.1.10:80")).kind == EgressDecision::Kind::deny);
  CHECK(p.decide(udp_to("198.18.1.10:5300")).kind == EgressDecision::Kind::redirect);
  CHECK(p.decide(tcp_to("198.18.1.10:5300")).kind == EgressDecision::Kind::deny);
  CHECK(p.decide(tcp_to("[fd00::1]:443")).kind == EgressDecision::Kind::connect);
  CHECK(p.decide(udp_to("[fd00::1]:443")).kind == EgressDecision::Kind::deny);
  CHECK(p.decide(udp_to("[fd00::1]:1500")).kind == EgressDecision::Kind::connect);
  // TCP only: UDP to the same destination is refused (default deny).
  EgressPolicy t;
  REQUIRE(t.add("allow", "tcp:198.18.0.0/24").ok());
  CHECK(t.decide(tcp_to("198.18.0.10:8080")).kind == EgressDecision::Kind::connect);
  const auto d = t.decide(udp_to("198.18.0.10:5300"));
  CHECK(d.kind == EgressDecision::Kind::deny);
  CHECK(d.code == engine::RefusalCode::flow_denied);
  // Bad prefixes name themselves.
  auto bad = t.add("allow", "icmp:198.18.0.0/24");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().context.find("--allow icmp:198.18.0.0/24: bad address 'icmp'") == 0);
  CHECK_FALSE(t.add("allow", "tcp:").ok());
  CHECK_FALSE(t.add("allow", "tcp:fd00::/16:80").ok());  // IPv6 still needs brackets
  CHECK_FALSE(t.add("deny", "tcp:udp:any").ok());
}
