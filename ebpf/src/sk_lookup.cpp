// SPDX-License-Identifier: Apache-2.0
#include <rendr/ebpf/sk_lookup.hpp>

#include <rendr/common/netns.hpp>

#include "flow_key.hpp"
#include "libbpf_util.hpp"
#include "shared/sk_lookup_shared.h"
#include "skeleton.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>
#include <steer_sk_lookup.skel.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

namespace rendr::ebpf {
namespace {

struct LinkDeleter {
  void operator()(bpf_link* l) const { bpf_link__destroy(l); }
};
using LinkPtr = std::unique_ptr<bpf_link, LinkDeleter>;

using KeyBytes = std::array<std::uint8_t, sizeof(rendr_sk_lookup_key)>;

KeyBytes key_bytes(const rendr_sk_lookup_key& k) {
  KeyBytes b{};
  std::memcpy(b.data(), &k, sizeof k);
  return b;
}

rendr_sk_lookup_key target_key(const Endpoint& vip, std::uint16_t port, int proto) {
  detail::WireAddress w = detail::wire_address(vip);
  rendr_sk_lookup_key k{};
  k.family = w.family;
  k.proto = static_cast<std::uint8_t>(proto);
  k.port = port;
  std::memcpy(k.addr, w.addr.data(), sizeof k.addr);
  return k;
}

}  // namespace

struct SkLookup::Impl {
  detail::Skeleton<steer_sk_lookup> skel;
  LinkPtr link;
  std::vector<bool> slot_used;
  std::map<KeyBytes, std::uint32_t> slots;  // registration -> SOCKMAP slot

  Status add(const std::string& ctx, const Endpoint& vip, std::uint16_t port, std::uint16_t lo,
             std::uint16_t hi, int fd);
  void free_slot(std::uint32_t slot) {
    (void)bpf_map__delete_elem(skel->maps.sk_lookup_socks, &slot, sizeof slot, 0);
    slot_used[slot] = false;
  }
};

SkLookup::SkLookup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SkLookup::SkLookup(SkLookup&&) noexcept = default;
SkLookup& SkLookup::operator=(SkLookup&&) noexcept = default;
SkLookup::~SkLookup() = default;

Result<SkLookup> SkLookup::create(const SkLookupOptions& options) {
  auto skel = detail::Skeleton<steer_sk_lookup>::open("steer_sk_lookup");
  if (!skel) {
    return skel.error();
  }
  skel->get()->rodata->af_inet = AF_INET;
  skel->get()->rodata->af_inet6 = AF_INET6;
  if (int err = bpf_map__set_max_entries(skel->get()->maps.sk_lookup_socks, options.max_sockets);
      err != 0) {
    return detail::libbpf_error(err, "steer_sk_lookup: set sk_lookup_socks max_entries");
  }
  RENDR_TRY(skel->load());
  auto impl = std::make_unique<Impl>();
  impl->skel = std::move(*skel);
  impl->slot_used.assign(options.max_sockets, false);
  return SkLookup(std::move(impl));
}

Status SkLookup::attach() {
  auto ns = rendr::current_netns();
  if (!ns) {
    return ns.error().with_context("steer_sk_lookup: attach");
  }
  return attach(ns->get());
}

Status SkLookup::attach(int netns_fd) {
  std::string ctx = "steer_sk_lookup: attach to netns fd " + std::to_string(netns_fd);
  if (impl_->link) {
    return make_error(std::errc::file_exists, ctx + ": already attached");
  }
  detail::LibbpfWarnings warnings;
  bpf_link* l = bpf_program__attach_netns(impl_->skel->progs.steer_sk_lookup, netns_fd);
  if (l == nullptr) {
    return detail::libbpf_error(0, ctx);
  }
  impl_->link.reset(l);
  return {};
}

Status SkLookup::Impl::add(const std::string& ctx, const Endpoint& vip, std::uint16_t port,
                           std::uint16_t lo, std::uint16_t hi, int fd) {
  int proto = 0;
  socklen_t len = sizeof proto;
  if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) != 0) {
    return errno_error(ctx + ": SO_PROTOCOL");
  }
  if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
    return make_error(std::errc::invalid_argument, ctx + ": socket is neither TCP nor UDP");
  }
  rendr_sk_lookup_key k = target_key(vip, port, proto);
  // Re-registering a VIP port swaps the socket in its slot: the target entry stays valid.
  auto existing = slots.find(key_bytes(k));
  std::uint32_t slot = 0;
  if (existing != slots.end()) {
    slot = existing->second;
  } else {
    while (slot < slot_used.size() && slot_used[slot]) {
      ++slot;
    }
    if (slot == slot_used.size()) {
      return make_error(std::errc::no_space_on_device, ctx + ": all SOCKMAP slots in use");
    }
  }
  std::uint64_t value = static_cast<std::uint64_t>(fd);
  int err = bpf_map__update_elem(skel->maps.sk_lookup_socks, &slot, sizeof slot, &value,
                                 sizeof value, BPF_ANY);
  if (err != 0) {
    return detail::libbpf_error(err, ctx + ": insert socket into sk_lookup_socks");
  }
  slot_used[slot] = true;
  // Socket first, target second: the program never finds a target with an empty slot.
  rendr_sk_lookup_target t{};
  t.slot = slot;
  t.port_lo = lo;
  t.port_hi = hi;
  err = bpf_map__update_elem(skel->maps.sk_lookup_targets, &k, sizeof k, &t, sizeof t, BPF_ANY);
  if (err != 0) {
    if (existing == slots.end()) {
      free_slot(slot);
    }
    return detail::libbpf_error(err, ctx + ": update sk_lookup_targets");
  }
  slots.emplace(key_bytes(k), slot);
  return {};
}

Status SkLookup::add_listener(const Endpoint& vip, int fd) {
  std::string ctx = "sk_lookup: add listener " + vip.to_string();
  if (vip.port == 0) {
    return make_error(std::errc::invalid_argument, ctx + ": port 0 (use add_listener_range)");
  }
  return impl_->add(ctx, vip, vip.port, vip.port, vip.port, fd);
}

Status SkLookup::add_listener_range(const Endpoint& vip, std::uint16_t lo, std::uint16_t hi,
                                    int fd) {
  std::string ctx = "sk_lookup: add listener " + vip.address_string() + " ports " +
                    std::to_string(lo) + "-" + std::to_string(hi);
  if (lo > hi) {
    return make_error(std::errc::invalid_argument, ctx + ": empty range");
  }
  return impl_->add(ctx, vip, 0, lo, hi, fd);
}

Status SkLookup::remove(const Endpoint& vip, SkProtocol protocol) {
  std::string ctx = "sk_lookup: remove " + vip.to_string();
  rendr_sk_lookup_key k =
      target_key(vip, vip.port, protocol == SkProtocol::tcp ? IPPROTO_TCP : IPPROTO_UDP);
  int err = bpf_map__delete_elem(impl_->skel->maps.sk_lookup_targets, &k, sizeof k, 0);
  if (err != 0) {
    return detail::libbpf_error(err, ctx);
  }
  if (auto it = impl_->slots.find(key_bytes(k)); it != impl_->slots.end()) {
    impl_->free_slot(it->second);
    impl_->slots.erase(it);
  }
  return {};
}

Result<SkLookupCounters> SkLookup::counters() const {
  std::uint64_t v[RENDR_SK_LOOKUP_STAT_MAX] = {};
  for (std::uint32_t i = 0; i < RENDR_SK_LOOKUP_STAT_MAX; ++i) {
    auto buf = detail::lookup_percpu(impl_->skel->maps.sk_lookup_stats, &i, sizeof i,
                                     sizeof(std::uint64_t), "sk_lookup: read sk_lookup_stats");
    if (!buf) {
      return buf.error();
    }
    v[i] = detail::sum_percpu<std::uint64_t>(*buf);
  }
  SkLookupCounters c;
  c.assigned = v[RENDR_SK_LOOKUP_STAT_ASSIGNED];
  c.no_socket = v[RENDR_SK_LOOKUP_STAT_NO_SOCKET];
  c.assign_failed = v[RENDR_SK_LOOKUP_STAT_ASSIGN_FAILED];
  return c;
}

int SkLookup::program_fd_for_test() const {
  return bpf_program__fd(impl_->skel->progs.steer_sk_lookup);
}

}  // namespace rendr::ebpf
