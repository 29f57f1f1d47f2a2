// SPDX-License-Identifier: Apache-2.0
#include "support/offload.hpp"

#include <rendr/common/unique_fd.hpp>

#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace rendr::test {
namespace {

// {get, set} legacy ethtool commands per switch.
std::pair<std::uint32_t, std::uint32_t> commands(Offload what) {
  switch (what) {
    case Offload::gro:
      return {ETHTOOL_GGRO, ETHTOOL_SGRO};
    case Offload::tso:
      return {ETHTOOL_GTSO, ETHTOOL_STSO};
    case Offload::gso:
      return {ETHTOOL_GGSO, ETHTOOL_SGSO};
  }
  return {0, 0};
}

const char* name_of(Offload what) {
  switch (what) {
    case Offload::gro:
      return "gro";
    case Offload::tso:
      return "tso";
    case Offload::gso:
      return "gso";
  }
  return "?";
}

std::uint32_t ethtool_cmd(const Netns& ns, const std::string& dev, std::uint32_t cmd,
                          std::uint32_t value) {
  NetnsScope in(ns);
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) {
    throw std::runtime_error(std::string("ethtool: socket: ") + std::strerror(errno));
  }
  struct ethtool_value ev {};
  ev.cmd = cmd;
  ev.data = value;
  ifreq ifr{};
  if (dev.size() >= sizeof ifr.ifr_name) {
    throw std::runtime_error("ethtool: device name too long: " + dev);
  }
  std::memcpy(ifr.ifr_name, dev.c_str(), dev.size());
  ifr.ifr_data = reinterpret_cast<char*>(&ev);
  if (::ioctl(s.get(), SIOCETHTOOL, &ifr) != 0) {
    throw std::runtime_error("ethtool " + dev + " cmd " + std::to_string(cmd) + " in " + ns.name() +
                             ": " + std::strerror(errno));
  }
  return ev.data;
}

}  // namespace

bool offload_on(const Netns& ns, const std::string& dev, Offload what) {
  return ethtool_cmd(ns, dev, commands(what).first, 0) != 0;
}

bool set_offload(const Netns& ns, const std::string& dev, Offload what, bool on) {
  (void)ethtool_cmd(ns, dev, commands(what).second, on ? 1U : 0U);
  const bool now = offload_on(ns, dev, what);
  if (now != on) {
    throw std::runtime_error("ethtool " + dev + ": " + name_of(what) + " stays " +
                             (now ? "on" : "off"));
  }
  return now;
}

}  // namespace rendr::test
