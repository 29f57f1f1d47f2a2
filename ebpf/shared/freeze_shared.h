/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * freeze_shared.h - structs of the freeze family (progs/freeze_tc.bpf.c, src/freezer.cpp).
 *
 * Map freeze_flows: PERCPU_HASH, key struct rendr_flow_key (normalised, see flow_shared.h),
 * value struct rendr_freeze_counters. Written by the C++ Freezer (insert = freeze, delete =
 * unfreeze); the BPF programs only bump the counters of an existing entry. User space sums the
 * per-CPU values (STYLE G3).
 *
 * Map freeze_hold: HASH, same key, value __u32 (0, reserved). Written by the C++ Freezer
 * (insert = hold: the flow's socket is live again; delete = unfreeze, or a new freeze); read by
 * the BPF programs for frozen flows only. A held flow's own packets (egress) and the peer's bare
 * ACKs pass; what the peer sends beyond a bare ACK is still dropped and recorded for replay, so
 * the new socket can take it in order before the freeze lifts.
 */
#ifndef RENDR_EBPF_SHARED_FREEZE_SHARED_H
#define RENDR_EBPF_SHARED_FREEZE_SHARED_H

#include "shared/compat_shared.h"
#include "shared/flow_shared.h"

/* Default skb->mark that passes a freeze (repair/ injects forged segments with it). */
#define RENDR_FREEZE_DEFAULT_BYPASS_MARK 0xC114u

struct rendr_freeze_counters {
	rendr_u64 ingress_packets; /* dropped at clsact ingress */
	rendr_u64 ingress_bytes;   /* skb->len (L2 frame) of those */
	rendr_u64 egress_packets;  /* dropped at clsact egress */
	rendr_u64 egress_bytes;
	rendr_u64 bypassed_packets; /* matched, but carried the bypass mark: passed */
	/* Highest (mod 2^32) acknowledgment number of the ACK segments dropped at ingress on this
	 * CPU, in the low 32 bits; bit 32 set once one was seen. Not a counter: user space takes
	 * the highest over CPUs instead of the sum. It tells the restore how much of the send
	 * queue the peer already holds (the ACKs that said so were dropped by the freeze). */
	rendr_u64 peer_ack;
	/* The raw (unscaled) receive window advertised by that same ACK, in the low 16 bits. */
	rendr_u64 peer_win;
	rendr_u64 replay_packets; /* ingress packets recorded in freeze_replay */
	rendr_u64 replay_skipped; /* could not be recorded (over RENDR_FREEZE_REPLAY_MAX) */
	rendr_u64 replay_lost;    /* the ring was full */
	rendr_u64 held_passed;    /* a held flow's packets let through (its own, bare ACKs) */
};
RENDR_SHARED_ASSERT(sizeof(struct rendr_freeze_counters) == 88, "rendr_freeze_counters layout");

#define RENDR_FREEZE_PEER_ACK_SEEN (1ULL << 32)

/*
 * Ring buffer freeze_replay: one record per packet dropped at ingress (from the peer) that
 * carries more than a bare ACK (payload, FIN or RST), so the new owner can feed it to the
 * restored socket instead of waiting for the peer to retransmit it. Record = this header +
 * |len| bytes of the packet from its IP header on. Every packet the kernel hands tc without
 * BIG TCP fits: GRO and GSO aggregates stop below 64 KiB (gro_max_size / gso_max_size 65536).
 * Larger ones (BIG TCP: gro_max_size above 65536) are counted in replay_skipped, not recorded;
 * ring full = counted in replay_lost. The Freezer sizes the ring (FreezerOptions).
 */
#define RENDR_FREEZE_REPLAY_MAX 65536u
struct rendr_replay_hdr {
	struct rendr_flow_key key; /* normalised, as in freeze_flows */
	rendr_u32 len;
	rendr_u32 pad;
};

/*
 * Map replay_scratch: ARRAY, one entry per possible CPU (the Freezer sets max_entries before
 * load), indexed by bpf_get_smp_processor_id(): a record is staged here before it is copied
 * into the ring. Not a PERCPU_ARRAY: per-CPU values are limited to 32 KiB (PCPU_MIN_UNIT_SIZE).
 * tc programs do not nest on one CPU (softirq / BH-disabled egress), so an entry has one user.
 */
struct rendr_replay_scratch {
	struct rendr_replay_hdr hdr;
	rendr_u8 data[RENDR_FREEZE_REPLAY_MAX];
};
RENDR_SHARED_ASSERT(sizeof(struct rendr_replay_scratch) ==
			    sizeof(struct rendr_replay_hdr) + RENDR_FREEZE_REPLAY_MAX,
		    "rendr_replay_scratch layout");

#endif /* RENDR_EBPF_SHARED_FREEZE_SHARED_H */
