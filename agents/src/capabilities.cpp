// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/capabilities.hpp>

#include <rendr/ebpf/probe.hpp>
#include <rendr/repair/repair.hpp>

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <tuple>
#include <utility>

namespace rendr::agents {

namespace {

// on_scratch_thread runs |f| on a new thread, so an unshare() there leaves the caller's
// namespaces alone.
template <typename F>
void on_scratch_thread(F&& f) {
  std::thread t(std::forward<F>(f));
  t.join();
}

// errno_name: "EPERM" for EPERM; "E<n>" when glibc has no name.
std::string errno_name(int err) {
  const char* n = ::strerrorname_np(err);
  return n != nullptr ? n : "E" + std::to_string(err);
}

Capability probe_netns() {
  Capability c{"netns", false, "", ""};
  on_scratch_thread([&] {
    if (::unshare(CLONE_NEWNET) == 0) {
      c.ok = true;
    } else {
      c.reason = errno_name(errno);
      c.detail = std::string("creating a network namespace was refused (") +
                 std::strerror(errno) + "): it needs CAP_SYS_ADMIN";
    }
  });
  return c;
}

// attach_tun opens the clone node |clone| and attaches (TUNSETIFF) to |name|, creating it when
// it does not exist and the caller may; the device goes away with the fd unless it is
// persistent. Returns {reason, detail}, both empty on success.
std::pair<std::string, std::string> attach_tun(const std::string& clone, const std::string& name,
                                               bool scratch) {
  const int fd = ::open(clone.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENODEV || err == ENXIO) {
      return {"no_tun", clone + ": " + std::strerror(err) + " (no TUN driver or clone node)"};
    }
    return {err == EACCES || err == EPERM ? "node_denied" : errno_name(err),
            clone + ": " + std::strerror(err) +
                " (the clone node must be openable by this user: mode 0666, as udev makes it, "
                "or --tun-clone PATH)"};
  }
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  const int rc = ::ioctl(fd, TUNSETIFF, &ifr);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    if (err == EBUSY) {
      return {"busy", "TUN device " + name + " is attached by another process"};
    }
    if (err == EPERM && scratch) {
      return {"cannot_create", "creating a TUN device was refused: it needs CAP_NET_ADMIN "
                               "(or name a device provisioned for this user)"};
    }
    if (err == EPERM) {
      return {"not_owner",
              "attaching TUN device " + name +
                  " was refused: it needs CAP_NET_ADMIN, or a device provisioned for this user "
                  "(ip tuntap add dev " + name + " mode tun user <uid>)"};
    }
    return {errno_name(err), "attaching TUN device " + name + ": " + std::strerror(err)};
  }
  return {};
}

Capability probe_tun(const ProbeOptions& o) {
  Capability c{"tun", false, "", ""};
  if (!o.tun_device.empty()) {
    // Only an existing device: attaching to a missing name would create one.
    if (::if_nametoindex(o.tun_device.c_str()) == 0) {
      c.reason = "no_device";
      c.detail = "TUN device " + o.tun_device +
                 " does not exist (provision it: ip tuntap add dev " + o.tun_device +
                 " mode tun user <uid>)";
    } else {
      std::tie(c.reason, c.detail) = attach_tun(o.tun_clone, o.tun_device, false);
    }
  } else {
    // No device configured: create a scratch one where it harms nobody.
    on_scratch_thread([&] {
      if (::unshare(CLONE_NEWNET) != 0) {
        c.reason = "cannot_create";
        c.detail = "no TUN device configured, and no private network namespace to try one in";
        return;
      }
      std::tie(c.reason, c.detail) = attach_tun(o.tun_clone, "rendrprobe0", true);
    });
  }
  c.ok = c.detail.empty();
  return c;
}

Capability from(const char* name, const Status& st) {
  if (st.ok()) {
    return {name, true, "", ""};
  }
  const auto& code = st.error().code;
  const bool is_errno =
      code.category() == std::generic_category() || code.category() == std::system_category();
  return {name, false, st.error().message(),
          is_errno ? errno_name(code.value()) : code.message()};
}

}  // namespace

bool CapabilityReport::ok(std::string_view name) const {
  for (const auto& c : caps) {
    if (c.name == name) {
      return c.ok;
    }
  }
  return false;
}

std::string CapabilityReport::reason_of(std::string_view name) const {
  for (const auto& c : caps) {
    if (c.name == name) {
      return c.reason;
    }
  }
  return "not_probed";
}

std::string CapabilityReport::detail(std::string_view name) const {
  for (const auto& c : caps) {
    if (c.name == name) {
      return c.detail;
    }
  }
  return "not probed";
}

CapabilityReport probe_capabilities(const ProbeOptions& options) {
  CapabilityReport r;
  // add tries |name| with |probe| unless options.only leaves it out.
  auto add = [&](const char* name, auto&& probe) {
    bool wanted = options.only.empty();
    for (const auto& n : options.only) {
      wanted = wanted || n == name;
    }
    r.caps.push_back(wanted ? probe() : Capability{name, false, "not probed", "not_probed"});
  };
  add("tcp_repair", [] { return from("tcp_repair", repair::probe_tcp_repair()); });
  add("ebpf_sched_cls", [] {
    return from("ebpf_sched_cls", ebpf::probe_prog_load(ebpf::ProgKind::sched_cls));
  });
  add("ebpf_sk_lookup", [] {
    return from("ebpf_sk_lookup", ebpf::probe_prog_load(ebpf::ProgKind::sk_lookup));
  });
  add("tun", [&] { return probe_tun(options); });
  add("netns", [] { return probe_netns(); });
  add("userstack", [&] {
    // A method needs the device its agent will use: a scratch TUN only shows that one could
    // be created here, not that a provisioned one attaches.
    if (options.tun_device.empty()) {
      return Capability{"userstack", false,
                        "no TUN device named (rendrctl status --tun-device DEV; rendr-agent "
                        "--tun DEV): the userstack method serves VIP connections routed into a "
                        "pre-provisioned TUN device (docs/userstack.md)",
                        "not_configured"};
    }
    return r.ok("tun") ? Capability{"userstack", true, "", ""}
                       : Capability{"userstack", false, r.detail("tun"), r.reason_of("tun")};
  });
  if (r.ok("tcp_repair") && r.ok("ebpf_sched_cls")) {
    r.method = "native";
    r.reason = "TCP_REPAIR and tc BPF programs work here: kernel sockets migrate with their state";
  } else if (r.ok("userstack")) {
    r.method = "userstack";
    r.reason = std::string("native migration needs ") +
               (!r.ok("tcp_repair") ? "TCP_REPAIR (" + r.detail("tcp_repair") + ")"
                                    : "tc BPF programs (" + r.detail("ebpf_sched_cls") + ")") +
               "; TUN device " + options.tun_device +
               " attaches: VIP connections routed into it are terminated in rendr's user-space "
               "TCP stack and migrate between userstack agents";
  } else {
    r.method = "engine";
    r.reason = std::string("native migration needs ") +
               (!r.ok("tcp_repair") ? "TCP_REPAIR (" + r.detail("tcp_repair") + ")"
                                    : "tc BPF programs (" + r.detail("ebpf_sched_cls") + ")") +
               "; no TUN device attaches for the userstack method (" + r.detail("userstack") +
               "), so only flows whose both ends run rendr (the framing engine) can move";
  }
  return r;
}

std::string kernel_release() {
  utsname u{};
  if (::uname(&u) != 0) {
    return "unknown";
  }
  return u.release;
}

}  // namespace rendr::agents
