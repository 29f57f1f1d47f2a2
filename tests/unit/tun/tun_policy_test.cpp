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
