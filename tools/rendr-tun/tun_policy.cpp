// SPDX-License-Identifier: Apache-2.0
#include "tun_policy.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <sstream>

namespace rendr::tun {

namespace {

Error bad(std::string what) { return make_error(std::errc::invalid_argument, std::move(what)); }

Result<std::uint16_t> parse_port(std::string_view s) {
  unsigned v = 0;
  const auto* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end || v > 65535) {
    return bad("bad port '" + std::string(s) + "'");
  }
  return static_cast<std::uint16_t>(v);
}

Status parse_ports(std::string_view s, Selector& sel) {
  const auto dash = s.find('-');
  auto lo = parse_port(s.substr(0, dash));
  if (!lo) {
    return std::move(lo).take_error();
  }
  std::uint16_t hi = *lo;
  if (dash != std::string_view::npos) {
    auto h = parse_port(s.substr(dash + 1));
    if (!h) {
      return std::move(h).take_error();
    }
    hi = *h;
  }
  if (hi < *lo) {
    return bad("port range '" + std::string(s) + "' is empty");
  }
  sel.port_lo = *lo;
  sel.port_hi = hi;
  return {};
}

std::vector<std::string> split_words(std::string_view line) {
  std::istringstream in{std::string(line)};
  std::vector<std::string> w;
  for (std::string t; in >> t;) {
    w.push_back(t);
  }
  return w;
}

}  // namespace

bool Cidr::contains(std::uint8_t id_family, const std::array<std::uint8_t, 16>& a) const {
  if (static_cast<std::uint8_t>(family) != id_family) {
    return false;
  }
  for (int i = 0; i < bits; i += 8) {
    const int n = std::min(8, bits - i);
    const auto mask = static_cast<std::uint8_t>(0xff << (8 - n));
    const auto byte = static_cast<std::size_t>(i / 8);
    if ((a[byte] & mask) != (addr[byte] & mask)) {
      return false;
    }
  }
  return true;
}

Result<Cidr> parse_cidr(std::string_view text) {
  Cidr c;
  const auto slash = text.find('/');
  const std::string a(text.substr(0, slash));
  if (::inet_pton(AF_INET, a.c_str(), c.addr.data()) == 1) {
    c.family = IpFamily::v4;
    c.bits = 32;
  } else if (::inet_pton(AF_INET6, a.c_str(), c.addr.data()) == 1) {
    c.family = IpFamily::v6;
    c.bits = 128;
  } else {
    return bad("bad address '" + a + "'");
  }
  if (slash != std::string_view::npos) {
    const auto s = text.substr(slash + 1);
    int b = -1;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), b);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size() || b < 0 || b > c.bits) {
      return bad("bad prefix length '" + std::string(s) + "' in '" + std::string(text) + "'");
    }
    c.bits = b;
  }
  const int total = c.family == IpFamily::v4 ? 32 : 128;
  for (int i = c.bits; i < total; ++i) {
    if ((c.addr[static_cast<std::size_t>(i / 8)] >> (7 - i % 8)) & 1) {
      return bad("'" + std::string(text) + "' has host bits set");
    }
  }
  return c;
}

bool Selector::matches(const engine::L3Identity& id) const {
  if (proto && *proto != id.proto) {
    return false;
  }
  if (dst && !dst->contains(id.family, id.dst)) {
    return false;
  }
  return id.dst_port >= port_lo && id.dst_port <= port_hi;
}

Result<std::uint8_t> parse_proto(std::string_view text) {
  if (text == "tcp") {
    return std::uint8_t{IPPROTO_TCP};
  }
  if (text == "udp") {
    return std::uint8_t{IPPROTO_UDP};
  }
  return bad("bad protocol '" + std::string(text) + "' (tcp or udp)");
}

Result<Selector> parse_selector(std::string_view text) {
  Selector sel;
  // A protocol prefix: "tcp:..." / "udp:..." (no address starts with these) or the bare name.
  for (const std::string_view p : {"tcp", "udp"}) {
    if (text == p) {
      sel.proto = *parse_proto(p);
      return sel;
    }
    if (text.size() > p.size() && text.substr(0, p.size()) == p && text[p.size()] == ':') {
      sel.proto = *parse_proto(p);
      text.remove_prefix(p.size() + 1);
      break;
    }
  }
  if (text == "any") {
    return sel;
  }
  std::string_view addr = text;
  std::string_view ports;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      return bad("'" + std::string(text) + "': missing ']'");
    }
    addr = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return bad("'" + std::string(text) + "': expected ':PORTS' after ']'");
      }
      ports = rest.substr(1);
    }
  } else if (const auto colon = text.find(':'); colon != std::string_view::npos) {
    if (text.find(':', colon + 1) != std::string_view::npos) {
      return bad("'" + std::string(text) + "': write IPv6 as [CIDR]:PORTS");
    }
    addr = text.substr(0, colon);
    ports = text.substr(colon + 1);
  }
  if (addr != "any") {
    auto c = parse_cidr(addr);
    if (!c) {
      return std::move(c).take_error();
    }
    sel.dst = *c;
  }
  if (!ports.empty() || (text.size() > 0 && text.back() == ':')) {
    RENDR_TRY(parse_ports(ports, sel));
  }
  return sel;
}

FlowDecision IngressConfig::decide(const engine::L3Identity& id) const {
  for (const auto& r : rules) {
    if (r.sel.matches(id)) {
      return FlowDecision{r.deny, r.peers};
    }
  }
  return FlowDecision{true, {}};
}

Result<IngressConfig> parse_ingress_config(std::string_view text, std::string_view name) {
  IngressConfig cfg;
  int lineno = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto nl = text.find('\n', pos);
    std::string_view line =
        text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
    lineno += 1;
    if (const auto hash = line.find('#'); hash != std::string_view::npos) {
      line = line.substr(0, hash);
    }
    const auto w = split_words(line);
    if (w.empty()) {
      continue;
    }
    const auto fail = [&](const std::string& what) {
      return bad(std::string(name) + ":" + std::to_string(lineno) + ": " + what);
    };
    IngressRule r;
    r.line = lineno;
    if (w[0] == "deny") {
      r.deny = true;
    } else if (w[0] != "match") {
      return fail("expected 'match' or 'deny', got '" + w[0] + "'");
    }
    std::size_t i = 1;
    bool have_dst = false;
    bool have_port = false;
    bool have_proto = false;
    bool any = false;
    for (; i < w.size() && w[i] != "->"; ++i) {
      if (w[i] == "any" && !any) {
        any = true;
        continue;
      }
      if ((w[i] == "dst" && !have_dst) || (w[i] == "port" && !have_port) ||
          (w[i] == "proto" && !have_proto)) {
        if (i + 1 >= w.size() || w[i + 1] == "->") {
          return fail("'" + w[i] + "' needs a value");
        }
        if (w[i] == "dst") {
          auto c = parse_cidr(w[i + 1]);
          if (!c) {
            return fail(c.error().context);
          }
          r.sel.dst = *c;
          have_dst = true;
        } else if (w[i] == "proto") {
          auto p = parse_proto(w[i + 1]);
          if (!p) {
            return fail(p.error().context);
          }
          r.sel.proto = *p;
          have_proto = true;
        } else {
          if (auto st = parse_ports(w[i + 1], r.sel); !st) {
            return fail(st.error().context);
          }
          have_port = true;
        }
        ++i;
        continue;
      }
      return fail("unexpected '" + w[i] +
                  "' (expected dst CIDR, port P[-Q], proto tcp|udp or any)");
    }
    if (any && (have_dst || have_port || have_proto)) {
      return fail("'any' with dst, port or proto");
    }
    if (!any && !have_dst && !have_port && !have_proto) {
      return fail("no selector: write 'any', 'dst CIDR', 'port P[-Q]' and/or 'proto tcp|udp'");
    }
    if (r.deny) {
      if (i < w.size()) {
        return fail("'deny' takes no '-> peer ...'");
      }
    } else {
      if (i >= w.size()) {
        return fail("'match' needs '-> peer HOST:PORT'");
      }
      for (++i; i < w.size(); ++i) {
        if (w[i] != "peer" || i + 1 >= w.size()) {
          return fail("expected 'peer HOST:PORT' after '->', got '" + w[i] + "'");
        }
        if (auto ep = Endpoint::parse(w[i + 1]); !ep) {
          return fail("bad peer '" + w[i + 1] + "': " + ep.error().context);
        }
        r.peers.push_back(w[++i]);
      }
      if (r.peers.empty()) {
        return fail("'match' needs at least one 'peer HOST:PORT'");
      }
    }
    cfg.rules.push_back(std::move(r));
  }
  if (cfg.rules.empty()) {
    return bad(std::string(name) + ": no rules (every flow would be denied)");
  }
  return cfg;
}

Status EgressPolicy::add(std::string_view kind, std::string_view arg) {
  const auto ctx = "--" + std::string(kind) + " " + std::string(arg) + ": ";
  if (kind == "redirect") {
    const auto eq = arg.find('=');
    if (eq == std::string_view::npos) {
      return bad(ctx + "expected SEL=HOST:PORT");
    }
    auto sel = parse_selector(arg.substr(0, eq));
    if (!sel) {
      return bad(ctx + sel.error().context);
    }
    auto to = Endpoint::parse(arg.substr(eq + 1));
    if (!to) {
      return bad(ctx + "bad target: " + to.error().context);
    }
    redirect.emplace_back(*sel, *to);
    return {};
  }
  auto sel = parse_selector(arg);
  if (!sel) {
    return bad(ctx + sel.error().context);
  }
  if (kind == "allow") {
    allow.push_back(*sel);
  } else if (kind == "deny") {
    deny.push_back(*sel);
  } else {
    return bad(ctx + "unknown rule kind");
  }
  return {};
}

EgressDecision EgressPolicy::decide(const engine::L3Identity& id) const {
  EgressDecision d;
  for (const auto& s : deny) {
    if (s.matches(id)) {
      d.kind = EgressDecision::Kind::deny;
      d.detail = "denied by --deny";
      return d;
    }
  }
  for (const auto& [s, to] : redirect) {
    if (s.matches(id)) {
      d.kind = EgressDecision::Kind::redirect;
      d.to = to;
      return d;
    }
  }
  for (const auto& s : allow) {
    if (s.matches(id)) {
      return d;
    }
  }
  d.kind = EgressDecision::Kind::deny;
  d.detail = "no --allow matches";
  return d;
}

}  // namespace rendr::tun
