// SPDX-License-Identifier: Apache-2.0
#include "gateway_lab.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>

#include <cstdio>

namespace rendr::lab {

int shell(const std::string& cmd, std::string* out) {
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) {
    return -1;
  }
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    if (out != nullptr) {
      out->append(buf, n);
    }
  }
  int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

namespace {

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q.push_back(c);
    }
  }
  return q + "'";
}

}  // namespace

Status GatewayLab::run(const std::string& role, const std::string& cmd) const {
  std::string out;
  int rc = shell("ip netns exec " + ns(role) + " sh -c " + quote(cmd), &out);
  if (rc != 0) {
    return make_error(std::errc::io_error, "lab: [" + ns(role) + "] '" + cmd + "' exited " +
                                               std::to_string(rc) + ": " + out);
  }
  return {};
}

Result<std::unique_ptr<GatewayLab>> GatewayLab::create(std::string prefix) {
  std::unique_ptr<GatewayLab> lab(new GatewayLab(std::move(prefix)));
  lab->teardown();  // leftovers of an earlier run
  lab->up_ = true;
  for (const char* role : {"peer", "gw", "a", "b"}) {
    std::string out;
    if (shell("ip netns add " + lab->ns(role), &out) != 0) {
      return make_error(std::errc::operation_not_permitted,
                        "lab: ip netns add " + lab->ns(role) + " failed (needs root): " + out);
    }
    RENDR_TRY(lab->run(role, "ip link set lo up"));
  }
  auto link = [&](const std::string& x, const std::string& xif, const std::string& y,
                  const std::string& yif) -> Status {
    std::string out;
    if (shell("ip -n " + lab->ns(x) + " link add " + xif + " type veth peer name " + yif +
                  " netns " + lab->ns(y),
              &out) != 0) {
      return make_error(std::errc::io_error, "lab: veth " + xif + ": " + out);
    }
    RENDR_TRY(lab->run(x, "ip link set " + xif + " up"));
    return lab->run(y, "ip link set " + yif + " up");
  };
  RENDR_TRY(link("peer", "eth0", "gw", "vpeer"));
  RENDR_TRY(link("a", "eth0", "gw", "va"));
  RENDR_TRY(link("b", "eth0", "gw", "vb"));
  RENDR_TRY(lab->run("peer",
                     "ip addr add 10.0.1.2/24 dev eth0 && ip -6 addr add fd00:1::2/64 dev eth0 "
                     "nodad && ip route add default via 10.0.1.1 && ip -6 route add default via "
                     "fd00:1::1"));
  RENDR_TRY(lab->run("gw",
                     "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 && "
                     "ip addr add 10.0.1.1/24 dev vpeer && ip -6 addr add fd00:1::1/64 dev vpeer "
                     "nodad && ip addr add 10.0.2.1/24 dev va && ip -6 addr add fd00:2::1/64 dev "
                     "va nodad && ip addr add 10.0.3.1/24 dev vb && ip -6 addr add fd00:3::1/64 "
                     "dev vb nodad"));
  for (const char* h : {"a", "b"}) {
    std::string n = std::string(h) == "a" ? "2" : "3";
    RENDR_TRY(lab->run(h, "ip addr add 10.0." + n + ".2/24 dev eth0 && ip -6 addr add fd00:" + n +
                              "::2/64 dev eth0 nodad && ip route add default via 10.0." + n +
                              ".1 && ip -6 route add default via fd00:" + n +
                              "::1 && ip addr add 10.99.0.1/32 dev lo && ip -6 addr add "
                              "fd99::1/128 dev lo nodad && ping -c1 -W2 -q 10.0." + n +
                              ".1 >/dev/null && ping -6 -c1 -W2 -q fd00:" + n + "::1 >/dev/null"));
  }
  RENDR_TRY(lab->route_vip_to(Host::a));
  return lab;
}

GatewayLab::~GatewayLab() { teardown(); }

void GatewayLab::teardown() {
  for (const char* role : {"peer", "gw", "a", "b"}) {
    (void)shell("ip netns del " + ns(role) + " 2>/dev/null");
  }
  up_ = false;
  frozen_ = false;
}

Result<UniqueFd> GatewayLab::netns_fd(const std::string& role) const {
  return UniqueFd::open("/run/netns/" + ns(role), O_RDONLY);
}

Status GatewayLab::route_vip_to(Host h) {
  const char* n = h == Host::a ? "2" : "3";
  return run("gw", std::string("ip route replace 10.99.0.1/32 via 10.0.") + n +
                       ".2 && ip -6 route replace fd99::1/128 via fd00:" + n + "::2");
}

Status GatewayLab::freeze(const FourTuple& t) {
  const std::string ip = t.local.family == IpFamily::v6 ? "ip6" : "ip";
  const std::string l = t.local.address_string();
  const std::string r = t.remote.address_string();
  const std::string lp = std::to_string(t.local.port);
  const std::string rp = std::to_string(t.remote.port);
  std::string script = "table inet rendr_freeze { chain forward_drop { type filter hook forward "
                       "priority -10; policy accept; " +
                       ip + " saddr " + l + " " + ip + " daddr " + r + " tcp sport " + lp +
                       " tcp dport " + rp + " drop; " + ip + " saddr " + r + " " + ip +
                       " daddr " + l + " tcp sport " + rp + " tcp dport " + lp + " drop; }; }";
  RENDR_TRY(run("gw", "echo " + quote(script) + " | nft -f -"));
  frozen_ = true;
  return {};
}

Status GatewayLab::unfreeze() {
  if (!frozen_) {
    return {};
  }
  frozen_ = false;
  return run("gw", "nft delete table inet rendr_freeze");
}

Result<NetnsEnter> NetnsEnter::enter(int netns_fd) {
  auto prev = UniqueFd::open("/proc/thread-self/ns/net", O_RDONLY);
  if (!prev) {
    return std::move(prev).take_error();
  }
  if (::setns(netns_fd, CLONE_NEWNET) != 0) {
    return errno_error("setns");
  }
  return NetnsEnter(std::move(*prev));
}

NetnsEnter::~NetnsEnter() {
  if (prev_.valid()) {
    (void)::setns(prev_.get(), CLONE_NEWNET);
  }
}

}  // namespace rendr::lab
