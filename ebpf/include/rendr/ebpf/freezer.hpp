// SPDX-License-Identifier: Apache-2.0
// Freezer: the freeze family (progs/freeze_tc.bpf.c). Attached to clsact ingress and egress of
// one or more devices, it drops every packet of a frozen TCP flow in both directions - so while
// repair/ checkpoints, restores or releases a socket, the kernel neither answers the peer nor
// lets a RST or a late segment out - and counts what it dropped. Packets whose skb->mark equals
// the bypass mark (default 0xC114, repair/'s inject_mark) pass, so forged segments get through.
//
// One Freezer owns one loaded program pair, its flow map and its tc filters; destroying it
// detaches everything (in the netns each filter was attached in). One map entry per connection
// freezes both directions. Not synchronised: use one Freezer from one thread at a time (the
// datapath side is lock-free; map updates are atomic per flow).
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace rendr::ebpf {

struct FreezerOptions {
  // skb->mark that passes a freeze; 0 disables the bypass. A load-time constant.
  std::uint32_t bypass_mark = 0xC114;
  // Capacity of the frozen-flow map.
  std::uint32_t max_flows = 65536;
  // Size of the ring the datapath records dropped packets in for replay (a power of two, at
  // least 128 KiB; EINVAL otherwise). It must hold what the peers of all flows frozen at once
  // send into their windows until take_dropped() reads it (a kernel socket's window reaches
  // 6 MiB with Linux's default tcp_rmem); beyond it records are counted in replay_lost.
  std::uint32_t replay_ring_bytes = 16U << 20;
  // A stable tc filter handle (nonzero): attach() puts the filters at this handle (and a fixed
  // priority) and replaces whatever filter is there - the ones an earlier Freezer with the same
  // handle left when its process was killed, with the maps they pin - instead of adding more.
  // Two Freezers that share a device need different handles. 0: the kernel picks, nothing is
  // ever replaced.
  std::uint32_t tc_handle = 0;
};

// Per-flow counters since freeze(): packets/bytes dropped per hook direction of the devices
// the Freezer is attached to (bytes are L2 frame lengths), and frozen-flow packets that passed
// because they carried the bypass mark.
struct FreezeCounters {
  std::uint64_t ingress_packets = 0;
  std::uint64_t ingress_bytes = 0;
  std::uint64_t egress_packets = 0;
  std::uint64_t egress_bytes = 0;
  std::uint64_t bypassed_packets = 0;
  // Highest acknowledgment number (mod 2^32, the latest in sequence order) of the ACK segments
  // dropped at ingress, i.e. what the peer had acknowledged while its ACKs could not reach the
  // frozen socket; empty if no ACK was dropped. Ingress is taken to come from the peer.
  std::optional<std::uint32_t> peer_ack;
  // The raw (not yet scaled) window field of that ACK - the widest one seen with that ACK number
  // (a later window update; the CPUs' counters do not keep their order); meaningful when
  // peer_ack is set.
  std::uint16_t peer_window = 0;
  // Dropped ingress packets carrying more than a bare ACK (payload, FIN, RST, SYN): recorded
  // for replay (take_dropped); not recordable (over 64 KiB from the IP header on: a BIG TCP
  // aggregate, gro_max_size above 65536); or lost (the ring, or the records kept per Freezer,
  // were full). Every packet is in exactly one of the three.
  std::uint64_t replay_packets = 0;
  std::uint64_t replay_skipped = 0;
  std::uint64_t replay_lost = 0;
  // Packets of the flow let through while it was held (hold()): its socket's own and the
  // peer's bare ACKs.
  std::uint64_t held_passed = 0;
};

// Unfrozen — what unfreeze_take() returns: the flow's final counters and the packets the freeze
// recorded that nobody took yet, oldest first.
struct Unfrozen {
  FreezeCounters counters;
  std::vector<std::vector<std::byte>> held;
};

class Freezer {
 public:
  // create opens and loads freeze_tc (verifier runs here); it attaches nothing. Errors: EPERM
  // without CAP_BPF/CAP_NET_ADMIN, EINVAL (replay_ring_bytes), and load failures with the
  // verifier's complaint in context.
  [[nodiscard]] static Result<Freezer> create(const FreezerOptions& options = {});

  Freezer(Freezer&&) noexcept;
  Freezer& operator=(Freezer&&) noexcept;
  ~Freezer();

  // attach adds the programs at clsact ingress and egress of |ifindex| (in the calling thread's
  // netns), creating clsact if needed. Attach every device the flow can cross. Errors: ENODEV,
  // EPERM, netlink errors; on error nothing stays attached to |ifindex|.
  [[nodiscard]] Status attach(int ifindex);
  // detach removes this Freezer's filters from |ifindex|. ENOENT if it is not attached there.
  [[nodiscard]] Status detach(int ifindex);

  // freeze starts dropping |flow| (local/remote as the socket owner sees them; IPv4-mapped
  // addresses count as IPv4) in both directions. Idempotent: freezing a frozen flow keeps its
  // counters. Errors: EINVAL (mixed families), E2BIG (map full).
  [[nodiscard]] Status freeze(const FourTuple& flow);
  // unfreeze lets |flow| through again and returns its final counters. ENOENT if not frozen.
  [[nodiscard]] Result<FreezeCounters> unfreeze(const FourTuple& flow);
  // unfreeze_take is unfreeze() that also returns what the freeze recorded since the last
  // take_dropped() (packets that came in while the caller fed the earlier ones), instead of
  // forgetting it. ENOENT if not frozen.
  [[nodiscard]] Result<Unfrozen> unfreeze_take(const FourTuple& flow);
  // hold switches the frozen |flow| to holding only what the peer sends, once its new socket is
  // live (restored and out of repair mode): the socket's own packets and the peer's bare ACKs
  // pass, while anything more the peer sends is still dropped and recorded, so the caller can
  // feed it to the socket (take_dropped, repair::Repairer::replay) in order before unfreeze.
  // Lifting the freeze instead would let the peer's newer packets reach the socket before the
  // recorded ones (the peer then retransmits the hole), or a socket still in repair mode (lost).
  // A later freeze() of the flow freezes it whole again. Errors: ENOENT (not frozen), E2BIG.
  [[nodiscard]] Status hold(const FourTuple& flow);
  // counters reads |flow|'s counters (summed over CPUs). ENOENT if not frozen.
  [[nodiscard]] Result<FreezeCounters> counters(const FourTuple& flow) const;
  // take_dropped returns, oldest first, the packets of |flow| the freeze dropped at ingress and
  // recorded (see FreezeCounters::replay_packets), each from its IP header on, and forgets
  // them; the new owner of the connection can feed them to the restored socket instead of
  // waiting for the peer to retransmit. Take them before unfreeze(), which forgets them too.
  // At most 64 MiB of records are kept per Freezer.
  [[nodiscard]] Result<std::vector<std::vector<std::byte>>> take_dropped(const FourTuple& flow);
  // frozen_count is the number of frozen flows.
  [[nodiscard]] Result<std::size_t> frozen_count() const;

  struct Impl;  // (public only so the ring-buffer callback can reach it)
  struct ProgramFds {
    int ingress = -1;
    int egress = -1;
  };
  // program_fds_for_test exposes the loaded programs for BPF_PROG_TEST_RUN.
  [[nodiscard]] ProgramFds program_fds_for_test() const;

 private:
  explicit Freezer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rendr::ebpf
