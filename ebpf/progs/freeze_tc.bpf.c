// SPDX-License-Identifier: GPL-2.0-only
/*
 * freeze_tc.bpf.c - the freeze family: tc (sched_cls) programs for clsact ingress and egress
 * that drop every packet of a frozen TCP flow while its socket is being checkpointed, restored
 * or released, so the kernel neither answers the peer nor lets a RST or late segment out.
 *
 * One entry in freeze_flows freezes both directions: the key is normalised
 * (rendr_flow_key_normalise), so a packet and its reply map to the same entry. Packets carrying
 * skb->mark == bypass_mark pass (repair/ injects forged segments with that mark); a bypass mark
 * of 0 disables the bypass. A held flow (an entry in freeze_hold too: its socket is live again)
 * only holds what the peer sends: its own packets and the peer's bare ACKs pass.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/parse.h"
#include "shared/freeze_shared.h"

char LICENSE[] SEC("license") = "GPL";

/* Load-time constant (STYLE B4): set by the Freezer between open and load. */
const volatile __u32 bypass_mark = RENDR_FREEZE_DEFAULT_BYPASS_MARK;

/* Written by the Freezer (insert/delete = freeze/unfreeze); BPF bumps counters of entries. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536); /* the Freezer may resize before load */
	__type(key, struct rendr_flow_key);
	__type(value, struct rendr_freeze_counters);
} freeze_flows SEC(".maps");

/* Written by the Freezer (insert = hold, delete = unfreeze or a new freeze); read here for
 * frozen flows only. The Freezer sizes it like freeze_flows. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct rendr_flow_key);
	__type(value, __u32);
} freeze_hold SEC(".maps");

/* Dropped ingress packets worth replaying (see freeze_shared.h); read by the Freezer, which
 * sets its size before load (FreezerOptions::replay_ring_bytes). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} freeze_replay SEC(".maps");

/* Staging area for one record per CPU (too big for the BPF stack, and for a PERCPU_ARRAY:
 * see freeze_shared.h). The Freezer sets max_entries to the number of possible CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rendr_replay_scratch);
} replay_scratch SEC(".maps");

static __always_inline void record_replay(struct __sk_buff *skb, const struct rendr_flow_key *key,
					  struct rendr_freeze_counters *c)
{
	struct rendr_replay_scratch *r;
	__u32 cpu = bpf_get_smp_processor_id();
	__u32 len;
	__u32 len_m1;

	if (skb->len <= ETH_HLEN)
		return;
	len = skb->len - ETH_HLEN;
	if (len > RENDR_FREEZE_REPLAY_MAX) {
		c->replay_skipped++;
		return;
	}
	r = bpf_map_lookup_elem(&replay_scratch, &cpu);
	if (!r) {
		c->replay_skipped++; /* more CPUs than the Freezer sized it for: never silently */
		return;
	}
	/*
	 * bpf_skb_load_bytes needs a size the verifier can prove to be in [1, MAX]. Older
	 * verifiers (6.1) do not carry a bound across the copies clang makes of len, nor learn
	 * umin >= 1 from "len != 0": bound len - 1 (opaque to clang, so the check stays on the
	 * register used) and pass len - 1 + 1.
	 */
	len_m1 = len - 1;
	asm volatile("" : "+r"(len_m1));
	if (len_m1 >= RENDR_FREEZE_REPLAY_MAX)
		return;
	len = len_m1 + 1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, r->data, len) < 0) {
		c->replay_skipped++;
		return;
	}
	r->hdr.key = *key;
	r->hdr.len = len;
	r->hdr.pad = 0;
	if (bpf_ringbuf_output(&freeze_replay, r, sizeof(r->hdr) + len, 0) < 0) {
		c->replay_lost++;
		return;
	}
	c->replay_packets++;
}

enum rendr_freeze_dir {
	FREEZE_INGRESS,
	FREEZE_EGRESS,
};

static __always_inline int freeze(struct __sk_buff *skb, enum rendr_freeze_dir dir)
{
	struct rendr_flow_key key = {};
	struct rendr_freeze_counters *c;
	__u8 flags = 0;
	struct rendr_tcp_meta meta = {};
	int held;
	int data;

	if (rendr_parse_tcp_meta(skb, &key, &flags, &meta) < 0)
		return TC_ACT_OK;
	rendr_flow_key_normalise(&key);
	c = bpf_map_lookup_elem(&freeze_flows, &key);
	if (!c)
		return TC_ACT_OK;
	/* Checked after the lookup, so bypassed_packets only counts packets of frozen flows. */
	if (bypass_mark != 0 && skb->mark == bypass_mark) {
		c->bypassed_packets++;
		return TC_ACT_OK;
	}
	/* More than a bare ACK: kept for replay when it comes from the peer. */
	data = meta.payload > 0 || (flags & (RENDR_TCP_FIN | RENDR_TCP_RST | RENDR_TCP_SYN));
	held = bpf_map_lookup_elem(&freeze_hold, &key) != NULL;
	/* Per-CPU values: plain increments are race-free. */
	if (held && (dir == FREEZE_EGRESS || !data)) {
		/* The socket is live: it may speak, and the peer's ACKs are news it needs now (a bare
		 * ACK carries no data the replay would have to deliver in order). */
		c->held_passed++;
		return TC_ACT_OK;
	}
	if (dir == FREEZE_INGRESS) {
		c->ingress_packets++;
		c->ingress_bytes += skb->len;
		/* Ingress comes from the peer: remember the highest ACK it sent (wrap-aware). */
		if (flags & RENDR_TCP_ACK) {
			__u32 prev = (__u32)c->peer_ack;

			/* >= : a later ACK for the same byte may carry a newer window. */
			if (!(c->peer_ack & RENDR_FREEZE_PEER_ACK_SEEN) ||
			    (__s32)(meta.ack_seq - prev) >= 0) {
				c->peer_ack = RENDR_FREEZE_PEER_ACK_SEEN | meta.ack_seq;
				c->peer_win = meta.window;
			}
		}
		/* A bare ACK is summed up by peer_ack; anything more is kept for replay. */
		if (data)
			record_replay(skb, &key, c);
	} else {
		c->egress_packets++;
		c->egress_bytes += skb->len;
	}
	return TC_ACT_SHOT;
}

SEC("tc")
int freeze_ingress(struct __sk_buff *skb)
{
	return freeze(skb, FREEZE_INGRESS);
}

SEC("tc")
int freeze_egress(struct __sk_buff *skb)
{
	return freeze(skb, FREEZE_EGRESS);
}
