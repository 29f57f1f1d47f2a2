// SPDX-License-Identifier: GPL-2.0-only
/*
 * steer_tc.bpf.c - the tc steering family: runs at clsact ingress of the gateway's peer-side
 * device and forwards each TCP packet to the VIP to the backend host that owns its flow, with
 * bpf_redirect_neigh (kernel >= 5.10) out of that backend's device.
 *
 * A flow already in steer_flows goes where the entry says (the agent rewrites the entry to move
 * a flow). A flow not in the table goes to the current default backend and is pinned there
 * (entry inserted with RENDR_STEER_FLOW_PINNED) on its first packet - SYN or, for flows that
 * predate the program, any non-RST packet - so a later change of the default backend or a new
 * backend never moves a live flow. RSTs of unknown flows are forwarded unpinned.
 * Non-TCP traffic and traffic to addresses that are not VIPs pass to the gateway's own stack.
 *
 * End of flows: both programs note the flow's last packet time and its FINs and RSTs in the
 * entry - steer_ingress for the peer's side, steer_return (clsact ingress of the backend-facing
 * devices, where the servers' packets from a VIP come back) for the server's side - so the
 * Steerer's collect() can remove entries of flows that ended, and only those. A SYN to an entry
 * that saw its flow end is a new connection on a reused 4-tuple: it is pinned afresh.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/parse.h"
#include "shared/steer_shared.h"

char LICENSE[] SEC("license") = "GPL";

/* Writers: Steerer (steer/remove) and this program (pinning). Readers: both. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* the Steerer may resize before load */
	__type(key, struct rendr_flow_key);
	__type(value, struct rendr_steer_flow);
} steer_flows SEC(".maps");

/* Writer: Steerer. Reader: this program. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RENDR_STEER_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct rendr_steer_backend);
} steer_backends SEC(".maps");

/* Writer: Steerer. Reader: this program. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct rendr_steer_vip_key);
	__type(value, __u32);
} steer_vips SEC(".maps");

/* Writer: Steerer. Reader: this program. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rendr_steer_config);
} steer_config SEC(".maps");

/* Writer: this program. Reader: Steerer (sums CPUs). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RENDR_STEER_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} steer_stats SEC(".maps");

/* Writer: this program. Reader: Steerer (sums CPUs). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RENDR_STEER_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct rendr_steer_backend_stats);
} steer_backend_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&steer_stats, &stat);

	if (v)
		(*v)++;
}

static __always_inline int is_vip(const struct rendr_flow_key *key)
{
	struct rendr_steer_vip_key vk = {};

	vk.family = key->family;
	__builtin_memcpy(vk.addr, key->dst_addr, sizeof(vk.addr));
	return bpf_map_lookup_elem(&steer_vips, &vk) != NULL;
}

/*
 * note_end records a packet of |flow|: its FIN / RST as |fin| / |rst| flags, and the time, at
 * most once per RENDR_STEER_SEEN_GRANULARITY_NS (so a busy flow does not write its entry per
 * packet). Plain stores: a lost race between CPUs loses a timestamp refresh, never a flag that
 * a later packet of the same kind would not set again.
 */
static __always_inline void note_end(struct rendr_steer_flow *flow, __u8 tcp_flags, __u32 fin,
				     __u32 rst)
{
	__u32 add = 0;
	__u64 now;

	if (tcp_flags & RENDR_TCP_FIN)
		add |= fin;
	if (tcp_flags & RENDR_TCP_RST)
		add |= rst;
	if (add && (flow->flags & add) != add)
		flow->flags |= add;
	now = bpf_ktime_get_ns();
	if (add || now - flow->last_seen_ns >= RENDR_STEER_SEEN_GRANULARITY_NS)
		flow->last_seen_ns = now;
}

/* pick returns the backend index for |key|, pinning new flows; -1 when there is none. */
static __always_inline long pick(const struct rendr_flow_key *key, __u8 tcp_flags)
{
	struct rendr_steer_flow *flow;
	struct rendr_steer_flow pin = {};
	struct rendr_steer_config *cfg;
	__u32 zero = 0;
	long err;

	flow = bpf_map_lookup_elem(&steer_flows, key);
	if (flow && (flow->flags & RENDR_STEER_FLOW_END_FLAGS) &&
	    (tcp_flags & (RENDR_TCP_SYN | RENDR_TCP_ACK)) == RENDR_TCP_SYN) {
		/* The old flow ended; this is a new one on the same 4-tuple. */
		cfg = bpf_map_lookup_elem(&steer_config, &zero);
		if (cfg && (cfg->flags & RENDR_STEER_HAS_DEFAULT)) {
			pin.backend = cfg->default_backend;
			pin.flags = RENDR_STEER_FLOW_PINNED;
			pin.last_seen_ns = bpf_ktime_get_ns();
			if (bpf_map_update_elem(&steer_flows, key, &pin, BPF_EXIST) == 0) {
				count(RENDR_STEER_STAT_PINNED);
				return pin.backend;
			}
		}
	}
	if (flow) {
		note_end(flow, tcp_flags, RENDR_STEER_FLOW_PEER_FIN, RENDR_STEER_FLOW_PEER_RST);
		count(RENDR_STEER_STAT_TABLE);
		return flow->backend;
	}
	cfg = bpf_map_lookup_elem(&steer_config, &zero);
	if (!cfg || !(cfg->flags & RENDR_STEER_HAS_DEFAULT))
		return -1;
	if (tcp_flags & RENDR_TCP_RST) {
		count(RENDR_STEER_STAT_UNPINNED);
		return cfg->default_backend;
	}
	pin.backend = cfg->default_backend;
	pin.flags = RENDR_STEER_FLOW_PINNED;
	pin.last_seen_ns = bpf_ktime_get_ns();
	err = bpf_map_update_elem(&steer_flows, key, &pin, BPF_NOEXIST);
	if (err == 0) {
		count(RENDR_STEER_STAT_PINNED);
		return pin.backend;
	}
	/* Lost a race with another CPU (or the agent): whoever inserted first wins. */
	flow = bpf_map_lookup_elem(&steer_flows, key);
	if (flow) {
		count(RENDR_STEER_STAT_TABLE);
		return flow->backend;
	}
	count(RENDR_STEER_STAT_TABLE_FULL);
	count(RENDR_STEER_STAT_UNPINNED);
	return pin.backend;
}

SEC("tc")
int steer_ingress(struct __sk_buff *skb)
{
	struct rendr_flow_key key = {};
	struct rendr_steer_backend *be;
	struct rendr_steer_backend_stats *bs;
	__u8 flags = 0;
	__u32 idx;
	long picked;

	if (rendr_parse_tcp(skb, &key, &flags) < 0)
		return TC_ACT_OK;
	if (!is_vip(&key)) {
		count(RENDR_STEER_STAT_NOT_VIP);
		return TC_ACT_OK;
	}
	picked = pick(&key, flags);
	if (picked < 0)
		goto no_backend;
	idx = (__u32)picked;
	be = bpf_map_lookup_elem(&steer_backends, &idx);
	if (!be || be->ifindex == 0)
		goto no_backend;
	bs = bpf_map_lookup_elem(&steer_backend_stats, &idx);
	if (bs) {
		bs->packets++;
		bs->bytes += skb->len;
	}
	if (be->nh_family != 0) {
		struct bpf_redir_neigh nh = {};

		nh.nh_family = be->nh_family;
		__builtin_memcpy(nh.ipv6_nh, be->nh_addr, sizeof(nh.ipv6_nh));
		return bpf_redirect_neigh(be->ifindex, &nh, sizeof(nh), 0);
	}
	return bpf_redirect_neigh(be->ifindex, NULL, 0, 0);

no_backend:
	/* A VIP packet with nowhere to go: dropping beats letting the gateway's stack RST it. */
	count(RENDR_STEER_STAT_NO_BACKEND);
	return TC_ACT_SHOT;
}

/*
 * steer_return: clsact ingress of the gateway's backend-facing devices. Packets from a VIP are
 * the servers' side of steered flows: their FIN / RST and time go into the flow's entry (looked
 * up with the key turned around, as steer_ingress stores it). Every packet passes unchanged.
 */
SEC("tc")
int steer_return(struct __sk_buff *skb)
{
	struct rendr_flow_key key = {};
	struct rendr_flow_key rev = {};
	struct rendr_steer_vip_key vk = {};
	struct rendr_steer_flow *flow;
	__u8 flags = 0;

	if (rendr_parse_tcp(skb, &key, &flags) < 0)
		return TC_ACT_OK;
	vk.family = key.family;
	__builtin_memcpy(vk.addr, key.src_addr, sizeof(vk.addr));
	if (!bpf_map_lookup_elem(&steer_vips, &vk))
		return TC_ACT_OK;
	rev.family = key.family;
	rev.proto = key.proto;
	rev.src_port = key.dst_port;
	rev.dst_port = key.src_port;
	__builtin_memcpy(rev.src_addr, key.dst_addr, sizeof(rev.src_addr));
	__builtin_memcpy(rev.dst_addr, key.src_addr, sizeof(rev.dst_addr));
	flow = bpf_map_lookup_elem(&steer_flows, &rev);
	if (flow)
		note_end(flow, flags, RENDR_STEER_FLOW_SERVER_FIN, RENDR_STEER_FLOW_SERVER_RST);
	return TC_ACT_OK;
}
