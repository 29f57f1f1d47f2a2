// SPDX-License-Identifier: Apache-2.0
#include <rendr/ebpf/freezer.hpp>

#include <cstring>
#include "flow_key.hpp"
#include "libbpf_util.hpp"
#include "shared/freeze_shared.h"
#include "skeleton.hpp"
#include "tc_attach.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <freeze_tc.skel.h>

#include <algorithm>
#include <map>
#include <string>
#include <cerrno>
#include <vector>

namespace rendr::ebpf {

static_assert(FreezerOptions{}.bypass_mark == RENDR_FREEZE_DEFAULT_BYPASS_MARK);

namespace {
constexpr std::uint32_t kFreezeTcPriority = 0x100;
}  // namespace

struct Freezer::Impl {
  detail::Skeleton<freeze_tc> skel;
  std::uint32_t tc_handle = 0;
  std::vector<detail::TcAttachment> attachments;
  // freeze_replay consumer (created on first use) and what it read, by normalised flow key.
  ring_buffer* replay = nullptr;
  std::map<std::string, std::vector<std::vector<std::byte>>> stash;
  std::size_t stash_bytes = 0;
  // Records read from the ring but not kept (the stash was full), by flow: reported in
  // replay_lost like a full ring, so no loss goes uncounted.
  std::map<std::string, std::uint64_t> stash_lost;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (replay != nullptr) {
      ring_buffer__free(replay);
    }
  }
  // drain moves every record waiting in freeze_replay into |stash|.
  Status drain();
  void forget(const rendr_flow_key& key);
  // take moves the records of |key| out of |stash|.
  std::vector<std::vector<std::byte>> take(const rendr_flow_key& key);
  // unhold drops |key| from freeze_hold (a no-op when it is not held).
  void unhold(const rendr_flow_key& key) {
    (void)bpf_map__delete_elem(skel->maps.freeze_hold, &key, sizeof key, 0);
  }
};

namespace {

// Records kept per Freezer at most (a flow nobody takes, e.g. an aborted migration's, must not
// grow the agent without bound).
constexpr std::size_t kMaxStashBytes = 64U << 20;
// The ring must hold at least one largest record (header, packet, the ring's own 8 bytes).
constexpr std::uint32_t kMinReplayRing = 128U << 10;

std::string key_bytes(const rendr_flow_key& k) {
  return std::string(reinterpret_cast<const char*>(&k), sizeof k);
}

int on_replay_record(void* ctx, void* data, std::size_t size) {
  auto* impl = static_cast<Freezer::Impl*>(ctx);
  rendr_replay_hdr h{};
  if (size < sizeof h) {
    return 0;
  }
  std::memcpy(&h, data, sizeof h);
  if (h.len == 0 || h.len > RENDR_FREEZE_REPLAY_MAX || sizeof h + h.len > size) {
    return 0;  // not a record the program writes
  }
  if (impl->stash_bytes + h.len > kMaxStashBytes) {
    ++impl->stash_lost[key_bytes(h.key)];
    return 0;
  }
  const auto* p = static_cast<const std::byte*>(data) + sizeof h;
  impl->stash[key_bytes(h.key)].emplace_back(p, p + h.len);
  impl->stash_bytes += h.len;
  return 0;
}

}  // namespace

Status Freezer::Impl::drain() {
  if (replay == nullptr) {
    replay = ring_buffer__new(bpf_map__fd(skel->maps.freeze_replay), on_replay_record, this,
                              nullptr);
    if (replay == nullptr) {
      return detail::libbpf_error(-errno, "freeze_tc: open freeze_replay ring buffer");
    }
  }
  if (int n = ring_buffer__consume(replay); n < 0) {
    return detail::libbpf_error(n, "freeze_tc: read freeze_replay");
  }
  return {};
}

void Freezer::Impl::forget(const rendr_flow_key& key) {
  stash_lost.erase(key_bytes(key));
  auto it = stash.find(key_bytes(key));
  if (it == stash.end()) {
    return;
  }
  for (const auto& pkt : it->second) {
    stash_bytes -= pkt.size();
  }
  stash.erase(it);
}

std::vector<std::vector<std::byte>> Freezer::Impl::take(const rendr_flow_key& key) {
  std::vector<std::vector<std::byte>> out;
  auto it = stash.find(key_bytes(key));
  if (it != stash.end()) {
    out = std::move(it->second);
    for (const auto& pkt : out) {
      stash_bytes -= pkt.size();
    }
    stash.erase(it);
  }
  return out;
}

namespace {

FreezeCounters to_counters(const rendr_freeze_counters& c) {
  FreezeCounters out;
  out.ingress_packets = c.ingress_packets;
  out.ingress_bytes = c.ingress_bytes;
  out.egress_packets = c.egress_packets;
  out.egress_bytes = c.egress_bytes;
  out.bypassed_packets = c.bypassed_packets;
  out.replay_packets = c.replay_packets;
  out.replay_skipped = c.replay_skipped;
  out.replay_lost = c.replay_lost;
  out.held_passed = c.held_passed;
  return out;
}

}  // namespace

Freezer::Freezer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Freezer::Freezer(Freezer&&) noexcept = default;
Freezer& Freezer::operator=(Freezer&&) noexcept = default;
Freezer::~Freezer() = default;

Result<Freezer> Freezer::create(const FreezerOptions& options) {
  auto skel = detail::Skeleton<freeze_tc>::open("freeze_tc");
  if (!skel) {
    return skel.error();
  }
  skel->get()->rodata->bypass_mark = options.bypass_mark;
  if (int err = bpf_map__set_max_entries(skel->get()->maps.freeze_flows, options.max_flows);
      err != 0) {
    return detail::libbpf_error(err, "freeze_tc: set freeze_flows max_entries");
  }
  if (int err = bpf_map__set_max_entries(skel->get()->maps.freeze_hold, options.max_flows);
      err != 0) {
    return detail::libbpf_error(err, "freeze_tc: set freeze_hold max_entries");
  }
  const std::uint32_t ring = options.replay_ring_bytes;
  if (ring < kMinReplayRing || (ring & (ring - 1)) != 0) {
    return make_error(std::errc::invalid_argument,
                      "freeze_tc: replay_ring_bytes " + std::to_string(ring) +
                          " must be a power of two of at least " + std::to_string(kMinReplayRing));
  }
  if (int err = bpf_map__set_max_entries(skel->get()->maps.freeze_replay, ring); err != 0) {
    return detail::libbpf_error(err, "freeze_tc: set freeze_replay size");
  }
  // One staging record per possible CPU (bpf_get_smp_processor_id() indexes it).
  auto ncpu = detail::possible_cpus();
  if (!ncpu) {
    return ncpu.error().with_context("freeze_tc: size replay_scratch");
  }
  if (int err = bpf_map__set_max_entries(skel->get()->maps.replay_scratch, *ncpu); err != 0) {
    return detail::libbpf_error(err, "freeze_tc: set replay_scratch max_entries");
  }
  RENDR_TRY(skel->load());
  auto impl = std::make_unique<Impl>();
  impl->skel = std::move(*skel);
  impl->tc_handle = options.tc_handle;
  return Freezer(std::move(impl));
}

Status Freezer::attach(int ifindex) {
  auto* s = impl_->skel.get();
  // With a stable handle: a fixed priority, ahead of the kernel's own picks (49152 down), so
  // a frozen flow's packets are dropped before other classifiers see them.
  const std::uint32_t prio = impl_->tc_handle != 0 ? kFreezeTcPriority : 0;
  auto in = detail::TcAttachment::attach(ifindex, detail::TcDirection::ingress,
                                         bpf_program__fd(s->progs.freeze_ingress),
                                         "freeze_tc/freeze_ingress", impl_->tc_handle, prio);
  if (!in) {
    return in.error();
  }
  auto out = detail::TcAttachment::attach(ifindex, detail::TcDirection::egress,
                                          bpf_program__fd(s->progs.freeze_egress),
                                          "freeze_tc/freeze_egress", impl_->tc_handle, prio);
  if (!out) {
    return out.error();  // |in| detaches itself
  }
  impl_->attachments.push_back(std::move(*in));
  impl_->attachments.push_back(std::move(*out));
  return {};
}

Status Freezer::detach(int ifindex) {
  auto& a = impl_->attachments;
  auto it = std::partition(a.begin(), a.end(),
                           [&](const detail::TcAttachment& t) { return t.ifindex() != ifindex; });
  if (it == a.end()) {
    return make_error(std::errc::no_such_file_or_directory,
                      "freeze_tc: detach ifindex " + std::to_string(ifindex) + ": not attached");
  }
  Status result;
  for (auto i = it; i != a.end(); ++i) {
    if (auto st = i->detach(); !st.ok() && result.ok()) {
      result = st;
    }
  }
  a.erase(it, a.end());
  return result;
}

Status Freezer::freeze(const FourTuple& flow) {
  std::string ctx = "freeze conn=" + flow.to_string();
  auto key = detail::freeze_key(flow);
  if (!key) {
    return key.error().with_context(ctx);
  }
  auto ncpu = detail::possible_cpus();
  if (!ncpu) {
    return ncpu.error().with_context(ctx);
  }
  // A fresh freeze starts with no recorded packets: leftovers of an earlier freeze of this flow
  // are all in the ring before the new entry exists, so they are moved to the stash now and
  // forgotten once the entry is in. Drained after the insert, the packets the program recorded
  // meanwhile were forgotten with them (on a Freezer's first freeze, while the ring buffer was
  // being opened: hundreds in a test, the peer's first packet in a migration).
  (void)impl_->drain();
  std::vector<rendr_freeze_counters> zero(*ncpu, rendr_freeze_counters{});
  int err = bpf_map__update_elem(impl_->skel->maps.freeze_flows, &*key, sizeof *key, zero.data(),
                                 zero.size() * sizeof(rendr_freeze_counters), BPF_NOEXIST);
  if (err == -EEXIST) {
    impl_->unhold(*key);  // already frozen: keep its counters and records, but whole again
    return {};
  }
  if (err != 0) {
    return detail::libbpf_error(err, ctx + ": update freeze_flows");
  }
  impl_->unhold(*key);
  impl_->forget(*key);  // the stash holds only records from before the insert
  return {};
}

Result<FreezeCounters> Freezer::counters(const FourTuple& flow) const {
  std::string ctx = "freeze counters conn=" + flow.to_string();
  auto key = detail::freeze_key(flow);
  if (!key) {
    return key.error().with_context(ctx);
  }
  auto buf = detail::lookup_percpu(impl_->skel->maps.freeze_flows, &*key, sizeof *key,
                                   sizeof(rendr_freeze_counters), ctx + ": lookup freeze_flows");
  if (!buf) {
    return buf.error();
  }
  FreezeCounters out = to_counters(detail::sum_percpu<rendr_freeze_counters>(*buf));
  if (auto lost = impl_->stash_lost.find(key_bytes(*key)); lost != impl_->stash_lost.end()) {
    out.replay_lost += lost->second;
  }
  // peer_ack is a per-CPU maximum, not a counter: take the latest over CPUs. For the same ACK
  // the widest window wins: a window update the peer sent later may have been seen on another
  // CPU (the order between CPUs is lost), and a peer never moves its window's right edge back
  // for the same ACK (RFC 9293 3.8.6: shrinking is discouraged; Linux does not).
  for (std::size_t off = 0; off + sizeof(rendr_freeze_counters) <= buf->size();
       off += sizeof(rendr_freeze_counters)) {
    rendr_freeze_counters one;
    std::memcpy(&one, buf->data() + off, sizeof one);
    if ((one.peer_ack & RENDR_FREEZE_PEER_ACK_SEEN) == 0) {
      continue;
    }
    auto ack = static_cast<std::uint32_t>(one.peer_ack);
    const auto win = static_cast<std::uint16_t>(one.peer_win);
    if (!out.peer_ack || static_cast<std::int32_t>(ack - *out.peer_ack) > 0 ||
        (ack == *out.peer_ack && win > out.peer_window)) {
      out.peer_ack = ack;
      out.peer_window = win;
    }
  }
  return out;
}

Status Freezer::hold(const FourTuple& flow) {
  std::string ctx = "hold conn=" + flow.to_string();
  auto key = detail::freeze_key(flow);
  if (!key) {
    return key.error().with_context(ctx);
  }
  // Only a frozen flow can be held (the programs look at freeze_hold for frozen flows only).
  auto c = counters(flow);
  if (!c) {
    return c.error().with_context(ctx);
  }
  const std::uint32_t zero = 0;
  int err = bpf_map__update_elem(impl_->skel->maps.freeze_hold, &*key, sizeof *key, &zero,
                                 sizeof zero, BPF_ANY);
  if (err != 0) {
    return detail::libbpf_error(err, ctx + ": update freeze_hold");
  }
  return {};
}

Result<Unfrozen> Freezer::unfreeze_take(const FourTuple& flow) {
  // Read, then delete: packets dropped in between are not counted (nanoseconds; acceptable).
  auto c = counters(flow);
  if (!c) {
    return c.error().with_context("unfreeze");
  }
  auto key = detail::freeze_key(flow);
  int err = bpf_map__delete_elem(impl_->skel->maps.freeze_flows, &*key, sizeof *key, 0);
  if (err != 0) {
    return detail::libbpf_error(err, "unfreeze conn=" + flow.to_string() + ": delete");
  }
  // After the flow entry: a held flow never falls back to a whole freeze on its way out.
  impl_->unhold(*key);
  Unfrozen out;
  out.counters = *c;
  (void)impl_->drain();
  out.held = impl_->take(*key);
  impl_->forget(*key);
  return out;
}

Result<FreezeCounters> Freezer::unfreeze(const FourTuple& flow) {
  auto u = unfreeze_take(flow);
  if (!u) {
    return std::move(u).take_error();
  }
  return u->counters;
}

Result<std::vector<std::vector<std::byte>>> Freezer::take_dropped(const FourTuple& flow) {
  auto key = detail::freeze_key(flow);
  if (!key) {
    return key.error().with_context("take dropped packets of " + flow.to_string());
  }
  RENDR_TRY(impl_->drain());
  return impl_->take(*key);
}

Result<std::size_t> Freezer::frozen_count() const {
  const bpf_map* map = impl_->skel->maps.freeze_flows;
  rendr_flow_key cur{};
  rendr_flow_key next{};
  std::size_t n = 0;
  const void* prev = nullptr;
  // Bounded by max_entries: deletions during the walk may restart it from the first key.
  for (std::uint32_t i = 0; i <= bpf_map__max_entries(map); ++i) {
    int err = bpf_map__get_next_key(map, prev, &next, sizeof next);
    if (err == -ENOENT) {
      return n;
    }
    if (err != 0) {
      return detail::libbpf_error(err, "freeze_tc: walk freeze_flows");
    }
    ++n;
    cur = next;
    prev = &cur;
  }
  return n;
}

Freezer::ProgramFds Freezer::program_fds_for_test() const {
  auto* s = impl_->skel.get();
  return {bpf_program__fd(s->progs.freeze_ingress), bpf_program__fd(s->progs.freeze_egress)};
}

}  // namespace rendr::ebpf
