// SPDX-License-Identifier: Apache-2.0
#include <rendr/ebpf/steerer.hpp>

#include "flow_key.hpp"
#include "libbpf_util.hpp"
#include "shared/steer_shared.h"
#include "skeleton.hpp"
#include "steer_adopt.hpp"
#include "tc_attach.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <steer_tc.skel.h>
#include <sys/socket.h>

#include <cerrno>
#include <ctime>
#include <cstring>
#include <set>

namespace rendr::ebpf {

static_assert(Steerer::kMaxBackends == RENDR_STEER_MAX_BACKENDS);

// Stable places of the steering filters (SteererOptions::tc_handle): after the freeze's 0x100.
constexpr std::uint32_t kSteerIngressPriority = 0x180;
constexpr std::uint32_t kSteerReturnPriority = 0x181;

struct Steerer::Impl {
  detail::Skeleton<steer_tc> skel;
  std::vector<detail::TcAttachment> attachments;
  std::uint32_t tc_handle = 0;
  AdoptCounts adopted;
  std::set<std::uint32_t> adopted_maps;

  Status attach(int ifindex, const bpf_program* prog, std::uint32_t priority, std::string what) {
    const int fd = bpf_program__fd(prog);
    if (tc_handle != 0) {
      auto a = detail::adopt_steer_table(ifindex, tc_handle, priority, detail::prog_id_of(fd),
                                         bpf_map__fd(skel->maps.steer_flows),
                                         bpf_map__fd(skel->maps.steer_backends), adopted_maps);
      if (!a) {
        return std::move(a).take_error();
      }
      adopted.adopted += a->adopted;
      adopted.dropped += a->dropped;
    }
    auto att = detail::TcAttachment::attach(ifindex, detail::TcDirection::ingress, fd,
                                            std::move(what), tc_handle,
                                            tc_handle != 0 ? priority : 0);
    if (!att) {
      return att.error();
    }
    attachments.push_back(std::move(*att));
    return {};
  }
};

namespace {

rendr_steer_vip_key vip_key(const Endpoint& vip) {
  detail::WireAddress w = detail::wire_address(vip);
  rendr_steer_vip_key k{};
  k.family = w.family;
  std::memcpy(k.addr, w.addr.data(), sizeof k.addr);
  return k;
}

SteeredFlow to_flow(const rendr_flow_key& key, const rendr_steer_flow& v) {
  SteeredFlow f{detail::tuple_from_steer_key(key), v.backend,
                (v.flags & RENDR_STEER_FLOW_PINNED) != 0};
  f.peer_fin = (v.flags & RENDR_STEER_FLOW_PEER_FIN) != 0;
  f.peer_rst = (v.flags & RENDR_STEER_FLOW_PEER_RST) != 0;
  f.server_fin = (v.flags & RENDR_STEER_FLOW_SERVER_FIN) != 0;
  f.server_rst = (v.flags & RENDR_STEER_FLOW_SERVER_RST) != 0;
  f.last_seen_ns = v.last_seen_ns;
  return f;
}

Status check_index(std::uint32_t index, const std::string& ctx) {
  if (index >= Steerer::kMaxBackends) {
    return make_error(std::errc::invalid_argument,
                      ctx + ": backend index " + std::to_string(index) + " out of range");
  }
  return {};
}

}  // namespace

Steerer::Steerer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Steerer::Steerer(Steerer&&) noexcept = default;
Steerer& Steerer::operator=(Steerer&&) noexcept = default;
Steerer::~Steerer() = default;

Result<Steerer> Steerer::create(const SteererOptions& options) {
  auto skel = detail::Skeleton<steer_tc>::open("steer_tc");
  if (!skel) {
    return skel.error();
  }
  if (int err = bpf_map__set_max_entries(skel->get()->maps.steer_flows, options.max_flows);
      err != 0) {
    return detail::libbpf_error(err, "steer_tc: set steer_flows max_entries");
  }
  RENDR_TRY(skel->load());
  auto impl = std::make_unique<Impl>();
  impl->skel = std::move(*skel);
  impl->tc_handle = options.tc_handle;
  return Steerer(std::move(impl));
}

Status Steerer::attach(int ifindex) {
  return impl_->attach(ifindex, impl_->skel->progs.steer_ingress, kSteerIngressPriority,
                       "steer_tc/steer_ingress");
}

Status Steerer::attach_return(int ifindex) {
  return impl_->attach(ifindex, impl_->skel->progs.steer_return, kSteerReturnPriority,
                       "steer_tc/steer_return");
}

AdoptCounts Steerer::adopted() const { return impl_->adopted; }

Result<CollectResult> Steerer::collect(const CollectOptions& o) {
  std::uint64_t now = o.now_ns;
  if (now == 0) {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    now = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
          static_cast<std::uint64_t>(ts.tv_nsec);
  }
  const bpf_map* map = impl_->skel->maps.steer_flows;
  // Walk first, delete after: deleting while walking a hash map can restart the walk.
  std::vector<rendr_flow_key> ended;
  CollectResult res;
  rendr_flow_key cur{};
  rendr_flow_key next{};
  const void* prev = nullptr;
  for (std::uint32_t i = 0; i <= bpf_map__max_entries(map); ++i) {
    int err = bpf_map__get_next_key(map, prev, &next, sizeof next);
    if (err == -ENOENT) {
      break;
    }
    if (err != 0) {
      return detail::libbpf_error(err, "steer: walk steer_flows");
    }
    rendr_steer_flow v{};
    if (bpf_map__lookup_elem(map, &next, sizeof next, &v, sizeof v, 0) == 0) {
      ++res.examined;
      const bool both_fin = (v.flags & RENDR_STEER_FLOW_PEER_FIN) != 0 &&
                            (v.flags & RENDR_STEER_FLOW_SERVER_FIN) != 0;
      const bool rst = (v.flags & (RENDR_STEER_FLOW_PEER_RST | RENDR_STEER_FLOW_SERVER_RST)) != 0;
      const std::uint64_t quiet = now > v.last_seen_ns ? now - v.last_seen_ns : 0;
      if ((rst && quiet >= o.rst_linger_ns) || (both_fin && quiet >= o.fin_linger_ns)) {
        ended.push_back(next);
      }
    }
    cur = next;
    prev = &cur;
  }
  for (const auto& k : ended) {
    // Re-check under the latest value: a SYN may have re-pinned the 4-tuple meanwhile.
    rendr_steer_flow v{};
    if (bpf_map__lookup_elem(map, &k, sizeof k, &v, sizeof v, 0) != 0 ||
        (v.flags & RENDR_STEER_FLOW_END_FLAGS) == 0) {
      continue;
    }
    if (bpf_map__delete_elem(map, &k, sizeof k, 0) == 0) {
      ++res.removed;
    }
  }
  return res;
}

Status Steerer::add_vip(const Endpoint& vip) {
  rendr_steer_vip_key k = vip_key(vip);
  std::uint32_t v = 0;
  int err = bpf_map__update_elem(impl_->skel->maps.steer_vips, &k, sizeof k, &v, sizeof v, BPF_ANY);
  if (err != 0) {
    return detail::libbpf_error(err, "steer: add vip " + vip.address_string());
  }
  return {};
}

Status Steerer::remove_vip(const Endpoint& vip) {
  rendr_steer_vip_key k = vip_key(vip);
  int err = bpf_map__delete_elem(impl_->skel->maps.steer_vips, &k, sizeof k, 0);
  if (err != 0) {
    return detail::libbpf_error(err, "steer: remove vip " + vip.address_string());
  }
  return {};
}

Status Steerer::set_backend(std::uint32_t index, const Backend& backend) {
  std::string ctx = "steer: set backend " + std::to_string(index);
  RENDR_TRY(check_index(index, ctx));
  if (backend.ifindex <= 0) {
    return make_error(std::errc::invalid_argument, ctx + ": ifindex must be > 0");
  }
  rendr_steer_backend b{};
  b.ifindex = static_cast<std::uint32_t>(backend.ifindex);
  if (backend.nexthop) {
    detail::WireAddress w = detail::wire_address(*backend.nexthop);
    b.nh_family = w.family == RENDR_FAMILY_V6 ? AF_INET6 : AF_INET;
    std::memcpy(b.nh_addr, w.addr.data(), sizeof b.nh_addr);
  }
  int err = bpf_map__update_elem(impl_->skel->maps.steer_backends, &index, sizeof index, &b,
                                 sizeof b, BPF_ANY);
  if (err != 0) {
    return detail::libbpf_error(err, ctx);
  }
  return {};
}

Status Steerer::clear_backend(std::uint32_t index) {
  std::string ctx = "steer: clear backend " + std::to_string(index);
  RENDR_TRY(check_index(index, ctx));
  rendr_steer_backend b{};
  int err = bpf_map__update_elem(impl_->skel->maps.steer_backends, &index, sizeof index, &b,
                                 sizeof b, BPF_ANY);
  if (err != 0) {
    return detail::libbpf_error(err, ctx);
  }
  return {};
}

Status Steerer::set_default_backend(std::uint32_t index) {
  std::string ctx = "steer: set default backend " + std::to_string(index);
  RENDR_TRY(check_index(index, ctx));
  rendr_steer_config c{};
  c.default_backend = index;
  c.flags = RENDR_STEER_HAS_DEFAULT;
  std::uint32_t zero = 0;
  int err = bpf_map__update_elem(impl_->skel->maps.steer_config, &zero, sizeof zero, &c, sizeof c,
                                 BPF_ANY);
  if (err != 0) {
    return detail::libbpf_error(err, ctx);
  }
  return {};
}

Status Steerer::clear_default_backend() {
  rendr_steer_config c{};
  std::uint32_t zero = 0;
  int err = bpf_map__update_elem(impl_->skel->maps.steer_config, &zero, sizeof zero, &c, sizeof c,
                                 BPF_ANY);
  if (err != 0) {
    return detail::libbpf_error(err, "steer: clear default backend");
  }
  return {};
}

Status Steerer::steer(const FourTuple& flow, std::uint32_t backend) {
  std::string ctx = "steer conn=" + flow.to_string() + " backend=" + std::to_string(backend);
  RENDR_TRY(check_index(backend, ctx));
  auto key = detail::steer_key(flow);
  if (!key) {
    return key.error().with_context(ctx);
  }
  rendr_steer_flow v{};
  v.backend = backend;
  int err = bpf_map__update_elem(impl_->skel->maps.steer_flows, &*key, sizeof *key, &v, sizeof v,
                                 BPF_ANY);
  if (err != 0) {
    return detail::libbpf_error(err, ctx);
  }
  return {};
}

Status Steerer::remove(const FourTuple& flow) {
  std::string ctx = "steer remove conn=" + flow.to_string();
  auto key = detail::steer_key(flow);
  if (!key) {
    return key.error().with_context(ctx);
  }
  int err = bpf_map__delete_elem(impl_->skel->maps.steer_flows, &*key, sizeof *key, 0);
  if (err != 0) {
    return detail::libbpf_error(err, ctx);
  }
  return {};
}

Result<std::optional<SteeredFlow>> Steerer::lookup(const FourTuple& flow) const {
  std::string ctx = "steer lookup conn=" + flow.to_string();
  auto key = detail::steer_key(flow);
  if (!key) {
    return key.error().with_context(ctx);
  }
  rendr_steer_flow v{};
  int err = bpf_map__lookup_elem(impl_->skel->maps.steer_flows, &*key, sizeof *key, &v, sizeof v, 0);
  if (err == -ENOENT) {
    return std::optional<SteeredFlow>{};
  }
  if (err != 0) {
    return detail::libbpf_error(err, ctx);
  }
  return std::optional<SteeredFlow>(to_flow(*key, v));
}

Result<std::vector<SteeredFlow>> Steerer::flows() const {
  const bpf_map* map = impl_->skel->maps.steer_flows;
  std::vector<SteeredFlow> out;
  rendr_flow_key cur{};
  rendr_flow_key next{};
  const void* prev = nullptr;
  for (std::uint32_t i = 0; i <= bpf_map__max_entries(map); ++i) {
    int err = bpf_map__get_next_key(map, prev, &next, sizeof next);
    if (err == -ENOENT) {
      return out;
    }
    if (err != 0) {
      return detail::libbpf_error(err, "steer: walk steer_flows");
    }
    rendr_steer_flow v{};
    // An entry removed between get_next_key and lookup is simply skipped.
    if (bpf_map__lookup_elem(map, &next, sizeof next, &v, sizeof v, 0) == 0) {
      out.push_back(to_flow(next, v));
    }
    cur = next;
    prev = &cur;
  }
  return out;
}

Result<SteerCounters> Steerer::counters() const {
  std::uint64_t v[RENDR_STEER_STAT_MAX] = {};
  for (std::uint32_t i = 0; i < RENDR_STEER_STAT_MAX; ++i) {
    auto buf = detail::lookup_percpu(impl_->skel->maps.steer_stats, &i, sizeof i,
                                     sizeof(std::uint64_t), "steer: read steer_stats");
    if (!buf) {
      return buf.error();
    }
    v[i] = detail::sum_percpu<std::uint64_t>(*buf);
  }
  SteerCounters c;
  c.table = v[RENDR_STEER_STAT_TABLE];
  c.pinned = v[RENDR_STEER_STAT_PINNED];
  c.unpinned = v[RENDR_STEER_STAT_UNPINNED];
  c.not_vip = v[RENDR_STEER_STAT_NOT_VIP];
  c.no_backend = v[RENDR_STEER_STAT_NO_BACKEND];
  c.table_full = v[RENDR_STEER_STAT_TABLE_FULL];
  return c;
}

Result<BackendCounters> Steerer::backend_counters(std::uint32_t index) const {
  std::string ctx = "steer: backend counters " + std::to_string(index);
  RENDR_TRY(check_index(index, ctx));
  auto buf = detail::lookup_percpu(impl_->skel->maps.steer_backend_stats, &index, sizeof index,
                                   sizeof(rendr_steer_backend_stats), ctx);
  if (!buf) {
    return buf.error();
  }
  auto s = detail::sum_percpu<rendr_steer_backend_stats>(*buf);
  return BackendCounters{s.packets, s.bytes};
}

int Steerer::program_fd_for_test() const {
  return bpf_program__fd(impl_->skel->progs.steer_ingress);
}

int Steerer::return_program_fd_for_test() const {
  return bpf_program__fd(impl_->skel->progs.steer_return);
}

}  // namespace rendr::ebpf
