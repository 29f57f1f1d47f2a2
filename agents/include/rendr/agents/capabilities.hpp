// SPDX-License-Identifier: Apache-2.0
// The capability probe: what this build can do on this host, found by trying (never guessed
// from the uid or the kernel version), and the migration method that follows. One
// implementation for rendr-agent's status, `rendrctl status` and the privileged tests.
//
// Capabilities (name: what was tried):
//   tcp_repair      TCP_REPAIR on a fresh TCP socket
//   ebpf_sched_cls  loading a tc program (freeze, gateway steering)
//   ebpf_sk_lookup  loading an sk_lookup program
//   netns           unshare(CLONE_NEWNET) on a scratch thread
//   tun             attaching a TUN device: the configured one (ProbeOptions::tun_device), else
//                   a scratch device created in a private network namespace
//   userstack       rendr's user-space TCP fallback as a migration method: the configured TUN
//                   device (ProbeOptions::tun_device) attaches; false without one
//
// Each failure carries a short machine-readable reason besides the sentence: for syscalls the
// errno name ("EPERM", "EACCES", ...); for tun/userstack one of
//   node_denied     the clone node (/dev/net/tun or ProbeOptions::tun_clone) cannot be opened
//   no_tun          the clone node or the TUN driver is missing
//   no_device       the named device does not exist (rendr never creates it)
//   not_owner       TUNSETIFF refused: the device is provisioned for another user/group
//   busy            another process has the device attached
//   cannot_create   no device named, and a scratch one cannot be created
//   not_configured  userstack only: no device named
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace rendr::agents {

struct Capability {
  std::string name;
  bool ok = false;
  std::string detail;  // why not (empty when ok)
  std::string reason;  // short code for |detail| (above); empty when ok
};

struct ProbeOptions {
  std::string tun_device;  // a pre-provisioned TUN device to attach; empty: a scratch one
  std::string tun_clone = "/dev/net/tun";  // the TUN clone node to open (rendr-agent --tun-clone)
  // only: the capabilities to try (names above); empty: all of them. The others are reported
  // not ok with detail "not probed" - e.g. a test that needs only netns skips the BPF loads and
  // the scratch TUN.
  std::vector<std::string> only;
};

struct CapabilityReport {
  std::vector<Capability> caps;
  std::string method;  // "native", "userstack" or "engine"
  std::string reason;  // why that method, in a sentence
  [[nodiscard]] bool ok(std::string_view name) const;
  [[nodiscard]] std::string detail(std::string_view name) const;
  [[nodiscard]] std::string reason_of(std::string_view name) const;  // a capability's code
};

// probe_capabilities tries every capability (or |options|.only) and picks the method; the
// method is only meaningful when tcp_repair and ebpf_sched_cls were among those tried.
[[nodiscard]] CapabilityReport probe_capabilities(const ProbeOptions& options = {});

// kernel_release: uname -r.
[[nodiscard]] std::string kernel_release();

}  // namespace rendr::agents
