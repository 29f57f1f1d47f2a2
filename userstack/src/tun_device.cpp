// SPDX-License-Identifier: Apache-2.0
#include <rendr/userstack/tun_device.hpp>

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rendr::userstack {

Result<TunDevice> TunDevice::attach(const TunOptions& opts) {
  const std::string ctx = "attach TUN device '" + opts.name + "'";
  if (opts.name.empty() || opts.name.size() >= IFNAMSIZ) {
    return make_error(std::errc::invalid_argument, ctx + ": name must be 1-15 characters");
  }
  // TUNSETIFF on a missing name would CREATE a device when we hold CAP_NET_ADMIN: never do
  // that silently, the device is provisioned once by root.
  if (::if_nametoindex(opts.name.c_str()) == 0) {
    return make_error(std::errc::no_such_device,
                      ctx +
                          ": device does not exist in this network namespace (provision it "
                          "once as root: 'ip tuntap add dev " +
                          opts.name + " mode tun user <uid>')");
  }
  auto fd = UniqueFd::open(opts.clone_path, O_RDWR | O_NONBLOCK);
  if (!fd) {
    int err = fd.error().code.value();
    if (err == EACCES || err == EPERM) {
      return errno_error(
          ctx + ": " + opts.clone_path + " not accessible (needs mode 0666 or group access)", err);
    }
    return std::move(fd).take_error().with_context(ctx);
  }
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, opts.name.data(), opts.name.size());
  // IFF_TUN_EXCL is not set: we attach to an existing device, never create one (creating needs
  // CAP_NET_ADMIN and is the provisioning step's job).
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(fd->get(), TUNSETIFF, &ifr) != 0) {
    int err = errno;
    switch (err) {
      case EBUSY:
        return errno_error(ctx + ": already attached by another process", err);
      case EPERM:
      case EACCES:
        return errno_error(ctx +
                               ": not the device's owner/group (provision it with "
                               "'ip tuntap add dev " +
                               opts.name +
                               " mode tun user <uid>'), "
                               "or the device does not exist and creating one needs "
                               "CAP_NET_ADMIN",
                           err);
      case EINVAL:
        return errno_error(ctx + ": device exists with other flags (not TUN / no vnet header)",
                           err);
      default:
        return errno_error(ctx + ": TUNSETIFF", err);
    }
  }
  int hdr_sz = sizeof(VnetHeader);
  if (::ioctl(fd->get(), TUNSETVNETHDRSZ, &hdr_sz) != 0) {
    return errno_error(ctx + ": TUNSETVNETHDRSZ");
  }
  unsigned off = opts.offload ? (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) : 0U;
  if (::ioctl(fd->get(), TUNSETOFFLOAD, off) != 0) {
    return errno_error(ctx + ": TUNSETOFFLOAD");
  }
  if (opts.mtu != 0) {
    auto s = UniqueFd::socket(AF_INET, SOCK_DGRAM, 0);
    if (!s) {
      return std::move(s).take_error().with_context(ctx + ": set MTU");
    }
    ifreq m{};
    std::memcpy(m.ifr_name, opts.name.data(), opts.name.size());
    m.ifr_mtu = static_cast<int>(opts.mtu);
    if (::ioctl(s->get(), SIOCSIFMTU, &m) != 0) {
      return errno_error(ctx + ": set MTU " + std::to_string(opts.mtu) +
                         " (needs CAP_NET_ADMIN; provision the MTU with the device)");
    }
  }
  return TunDevice(std::move(fd).value(), opts.name, opts.offload);
}

Result<unsigned> TunDevice::mtu() const {
  auto s = UniqueFd::socket(AF_INET, SOCK_DGRAM, 0);
  if (!s) {
    return std::move(s).take_error().with_context("read MTU of " + name_);
  }
  ifreq m{};
  std::memcpy(m.ifr_name, name_.data(), name_.size());
  if (::ioctl(s->get(), SIOCGIFMTU, &m) != 0) {
    return errno_error("read MTU of " + name_);
  }
  return static_cast<unsigned>(m.ifr_mtu);
}

}  // namespace rendr::userstack
