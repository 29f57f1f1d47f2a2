// SPDX-License-Identifier: Apache-2.0
#include "steer_adopt.hpp"

#include "libbpf_util.hpp"
#include "shared/flow_shared.h"
#include "shared/steer_shared.h"

#include <rendr/common/unique_fd.hpp>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace rendr::ebpf::detail {
namespace {

// Map fds of a program, by map name.
std::map<std::string, UniqueFd> maps_of(int prog_fd) {
  std::map<std::string, UniqueFd> out;
  bpf_prog_info info{};
  __u32 len = sizeof info;
  if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0 || info.nr_map_ids == 0) {
    return out;
  }
  std::vector<__u32> ids(info.nr_map_ids);
  const __u32 n = info.nr_map_ids;
  info = bpf_prog_info{};
  info.nr_map_ids = n;
  info.map_ids = reinterpret_cast<__u64>(ids.data());
  len = sizeof info;
  if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0) {
    return out;
  }
  for (__u32 i = 0; i < std::min(n, info.nr_map_ids); ++i) {
    UniqueFd fd(bpf_map_get_fd_by_id(ids[i]));
    if (!fd.valid()) {
      continue;
    }
    bpf_map_info mi{};
    __u32 mlen = sizeof mi;
    if (bpf_obj_get_info_by_fd(fd.get(), &mi, &mlen) == 0) {
      out.emplace(std::string(mi.name), std::move(fd));
    }
  }
  return out;
}

std::uint32_t map_id_of(int map_fd) {
  bpf_map_info mi{};
  __u32 len = sizeof mi;
  return bpf_obj_get_info_by_fd(map_fd, &mi, &len) == 0 ? mi.id : 0;
}

// The backend slots of a steer_backends map.
std::vector<rendr_steer_backend> backends_of(int fd) {
  std::vector<rendr_steer_backend> out(RENDR_STEER_MAX_BACKENDS);
  for (std::uint32_t i = 0; i < out.size(); ++i) {
    if (bpf_map_lookup_elem(fd, &i, &out[i]) != 0) {
      out[i] = rendr_steer_backend{};
    }
  }
  return out;
}

}  // namespace

std::uint32_t prog_id_of(int prog_fd) {
  bpf_prog_info info{};
  __u32 len = sizeof info;
  return bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0 ? info.id : 0;
}

Result<AdoptResult> adopt_steer_table(int ifindex, std::uint32_t handle, std::uint32_t priority,
                                      std::uint32_t own_prog_id, int new_flows_fd,
                                      int new_backends_fd, std::set<std::uint32_t>& seen_maps) {
  AdoptResult res;
  bpf_tc_hook hook{};
  hook.sz = sizeof hook;
  hook.ifindex = ifindex;
  hook.attach_point = BPF_TC_INGRESS;
  bpf_tc_opts opts{};
  opts.sz = sizeof opts;
  opts.handle = handle;
  opts.priority = priority;
  {
    LibbpfWarnings quiet(true);  // "no such filter" is the common case, not a warning
    if (bpf_tc_query(&hook, &opts) != 0 || opts.prog_id == 0 || opts.prog_id == own_prog_id) {
      return res;
    }
  }
  UniqueFd prog(bpf_prog_get_fd_by_id(opts.prog_id));
  if (!prog.valid()) {
    return errno_error("steer: open the program the previous agent left (id " +
                       std::to_string(opts.prog_id) + ")");
  }
  auto maps = maps_of(prog.get());
  auto flows = maps.find("steer_flows");
  auto backends = maps.find("steer_backends");
  if (flows == maps.end() || backends == maps.end()) {
    return res;  // not a steering program of ours
  }
  if (!seen_maps.insert(map_id_of(flows->second.get())).second) {
    return res;
  }
  const auto old_b = backends_of(backends->second.get());
  const auto new_b = backends_of(new_backends_fd);
  // old index -> new index, by device and next hop.
  std::vector<std::optional<std::uint32_t>> remap(old_b.size());
  for (std::size_t i = 0; i < old_b.size(); ++i) {
    if (old_b[i].ifindex == 0) {
      continue;
    }
    for (std::size_t j = 0; j < new_b.size(); ++j) {
      if (std::memcmp(&old_b[i], &new_b[j], sizeof old_b[i]) == 0) {
        remap[i] = static_cast<std::uint32_t>(j);
        break;
      }
    }
  }
  rendr_flow_key cur{};
  rendr_flow_key next{};
  const void* prev = nullptr;
  for (std::size_t guard = 0; guard < (1u << 24); ++guard) {
    if (bpf_map_get_next_key(flows->second.get(), prev, &next) != 0) {
      break;  // ENOENT: the end
    }
    rendr_steer_flow v{};
    if (bpf_map_lookup_elem(flows->second.get(), &next, &v) == 0) {
      if (v.backend < remap.size() && remap[v.backend]) {
        v.backend = *remap[v.backend];
        if (bpf_map_update_elem(new_flows_fd, &next, &v, BPF_NOEXIST) == 0) {
          ++res.adopted;
        }
      } else {
        ++res.dropped;
      }
    }
    cur = next;
    prev = &cur;
  }
  return res;
}

}  // namespace rendr::ebpf::detail
