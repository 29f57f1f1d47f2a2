// SPDX-License-Identifier: Apache-2.0
// TunDevice — owner of one attachment to a pre-provisioned TUN device (RAII: the fd is closed,
// and so the device released, on destruction). rendr never creates the device: root provisions
// it once ("ip tuntap add dev rtun0 mode tun user <owner>") and the owner attaches without any
// capability. The attachment is IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, and TUNSETOFFLOAD is applied
// on every attach because offload settings persist from a device's previous owner. Every packet
// read or written is preceded by a VnetHeader. Any thread; not synchronised.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace rendr::userstack {

// VnetHeader — struct virtio_net_hdr, declared here because <linux/virtio_net.h> does not
// compile as C++ (a member named "class"). Host byte order (little-endian device default).
struct VnetHeader {
  static constexpr std::uint8_t kNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
  static constexpr std::uint8_t kGsoNone = 0;
  std::uint8_t flags = 0;
  std::uint8_t gso_type = kGsoNone;
  std::uint16_t hdr_len = 0;
  std::uint16_t gso_size = 0;
  std::uint16_t csum_start = 0;
  std::uint16_t csum_offset = 0;
};
static_assert(sizeof(VnetHeader) == 10);

struct TunOptions {
  std::string name;  // device name (required), at most IFNAMSIZ-1 characters
  unsigned mtu = 0;  // 0: keep the device's MTU; else SIOCSIFMTU (needs CAP_NET_ADMIN)
  // Offloads announced with TUNSETOFFLOAD: with them the kernel hands us TSO super-packets
  // with partial checksums (fewer, larger packets: the throughput lever). false = none.
  bool offload = true;
  // The clone device; another node (c 10 200) serves containers or a group-readable copy.
  std::string clone_path = "/dev/net/tun";
};

class TunDevice {
 public:
  // attach opens /dev/net/tun and attaches to the existing device |opts.name|. Errors: ENODEV
  // (no such device in the caller's netns: attach never creates one, even as root),
  // EACCES/EPERM ("/dev/net/tun not accessible" / "not the device's owner"), EBUSY ("already
  // attached by another process"), ENOENT (no /dev/net/tun), EINVAL (bad name, or the
  // device is not a TUN device / lacks IFF_VNET_HDR support), plus TUNSETOFFLOAD errors.
  [[nodiscard]] static Result<TunDevice> attach(const TunOptions& opts);

  [[nodiscard]] int fd() const { return fd_.get(); }
  [[nodiscard]] const std::string& name() const { return name_; }
  // mtu reads the device's current MTU.
  [[nodiscard]] Result<unsigned> mtu() const;
  [[nodiscard]] bool offload() const { return offload_; }

 private:
  TunDevice(UniqueFd fd, std::string name, bool offload)
      : fd_(std::move(fd)), name_(std::move(name)), offload_(offload) {}
  UniqueFd fd_;
  std::string name_;
  bool offload_ = false;
};

}  // namespace rendr::userstack
