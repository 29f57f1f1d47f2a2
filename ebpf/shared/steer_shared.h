/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * steer_shared.h - structs of the tc steering family (progs/steer_tc.bpf.c, src/steerer.cpp).
 *
 * steer_flows    HASH  rendr_flow_key (as the packet arrives: src = peer, dst = VIP; not
 *                      normalised) -> rendr_steer_flow. Written by the Steerer (steer/remove/
 *                      collect) and by the programs (steer_ingress pins new flows to the default
 *                      backend; both record end-of-flow flags and the last packet's time).
 * steer_backends ARRAY u32 index -> rendr_steer_backend. Written by the Steerer, read by BPF.
 * steer_vips     HASH  rendr_steer_vip_key -> u32 (unused, 0). Written by the Steerer; only
 *                      packets to a listed VIP are steered, everything else passes (TC_ACT_OK).
 * steer_config   ARRAY [1] rendr_steer_config. Written by the Steerer, read by BPF.
 * steer_stats    PERCPU_ARRAY [RENDR_STEER_STAT_MAX] u64, by enum rendr_steer_stat. BPF writes.
 * steer_backend_stats PERCPU_ARRAY [max backends] rendr_steer_backend_stats. BPF writes.
 */
#ifndef RENDR_EBPF_SHARED_STEER_SHARED_H
#define RENDR_EBPF_SHARED_STEER_SHARED_H

#include "shared/compat_shared.h"
#include "shared/flow_shared.h"

#define RENDR_STEER_MAX_BACKENDS 256u

struct rendr_steer_backend {
	rendr_u32 ifindex;   /* egress device on the gateway; 0 = slot unused */
	rendr_u32 nh_family; /* 0: resolve dst via FIB; else AF_INET/AF_INET6 of nh_addr */
	rendr_u8 nh_addr[16]; /* nexthop, network order (IPv4 in the first 4 bytes) */
};
RENDR_SHARED_ASSERT(sizeof(struct rendr_steer_backend) == 24, "rendr_steer_backend layout");

enum rendr_steer_flow_flags {
	RENDR_STEER_FLOW_PINNED = 1u << 0,     /* inserted by the datapath (default backend) */
	/* End-of-flow evidence, set by the datapath (steer_ingress: the peer's packets;
	 * steer_return: the server's, at the backend devices), read by the Steerer's collect(). */
	RENDR_STEER_FLOW_PEER_FIN = 1u << 1,
	RENDR_STEER_FLOW_PEER_RST = 1u << 2,
	RENDR_STEER_FLOW_SERVER_FIN = 1u << 3,
	RENDR_STEER_FLOW_SERVER_RST = 1u << 4,
};
#define RENDR_STEER_FLOW_END_FLAGS                                                     \
	(RENDR_STEER_FLOW_PEER_FIN | RENDR_STEER_FLOW_PEER_RST | RENDR_STEER_FLOW_SERVER_FIN | \
	 RENDR_STEER_FLOW_SERVER_RST)

struct rendr_steer_flow {
	rendr_u32 backend; /* index into steer_backends */
	rendr_u32 flags;   /* enum rendr_steer_flow_flags */
	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last packet of the flow the datapath saw,
	 * refreshed at most every RENDR_STEER_SEEN_GRANULARITY_NS; 0 = set by the Steerer. */
	rendr_u64 last_seen_ns;
};
RENDR_SHARED_ASSERT(sizeof(struct rendr_steer_flow) == 16, "rendr_steer_flow layout");
#define RENDR_STEER_SEEN_GRANULARITY_NS 1000000000ull

struct rendr_steer_vip_key {
	rendr_u8 family; /* enum rendr_family */
	rendr_u8 pad0[3];
	rendr_u8 addr[16];
};
RENDR_SHARED_ASSERT(sizeof(struct rendr_steer_vip_key) == 20, "rendr_steer_vip_key layout");

enum rendr_steer_config_flags {
	RENDR_STEER_HAS_DEFAULT = 1u << 0,
};

struct rendr_steer_config {
	rendr_u32 default_backend;
	rendr_u32 flags; /* enum rendr_steer_config_flags */
};
RENDR_SHARED_ASSERT(sizeof(struct rendr_steer_config) == 8, "rendr_steer_config layout");

enum rendr_steer_stat {
	RENDR_STEER_STAT_TABLE = 0,   /* steered by an existing steer_flows entry */
	RENDR_STEER_STAT_PINNED,      /* new flow: pinned to the default backend */
	RENDR_STEER_STAT_UNPINNED,    /* default backend without pinning (RST, or table full) */
	RENDR_STEER_STAT_NOT_VIP,     /* TCP, but not to a VIP: passed */
	RENDR_STEER_STAT_NO_BACKEND,  /* no default / backend slot empty: dropped */
	RENDR_STEER_STAT_TABLE_FULL,  /* pinning failed (map full) */
	RENDR_STEER_STAT_MAX,
};

struct rendr_steer_backend_stats {
	rendr_u64 packets;
	rendr_u64 bytes;
};
RENDR_SHARED_ASSERT(sizeof(struct rendr_steer_backend_stats) == 16, "backend stats layout");

#endif /* RENDR_EBPF_SHARED_STEER_SHARED_H */
