/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * sk_lookup_shared.h - structs of the sk_lookup family (progs/steer_sk_lookup.bpf.c,
 * src/sk_lookup.cpp).
 *
 * sk_lookup_socks   SOCKMAP u32 slot -> socket. Written by SkLookup (listener fds); read by BPF.
 * sk_lookup_targets HASH rendr_sk_lookup_key -> rendr_sk_lookup_target. Written by SkLookup.
 *                   The program looks up the exact (family, proto, addr, port) first, then the
 *                   address-wide entry (port 0) whose [port_lo, port_hi] must contain the port.
 * sk_lookup_stats   PERCPU_ARRAY [RENDR_SK_LOOKUP_STAT_MAX] u64. BPF writes.
 */
#ifndef RENDR_EBPF_SHARED_SK_LOOKUP_SHARED_H
#define RENDR_EBPF_SHARED_SK_LOOKUP_SHARED_H

#include "shared/compat_shared.h"
#include "shared/flow_shared.h"

struct rendr_sk_lookup_key {
	rendr_u8 family; /* enum rendr_family */
	rendr_u8 proto;  /* IPPROTO_TCP / IPPROTO_UDP */
	rendr_u16 port;  /* host byte order; 0 = address-wide entry with a port range */
	rendr_u8 addr[16];
};
RENDR_SHARED_ASSERT(sizeof(struct rendr_sk_lookup_key) == 20, "rendr_sk_lookup_key layout");

struct rendr_sk_lookup_target {
	rendr_u32 slot;    /* key in sk_lookup_socks */
	rendr_u16 port_lo; /* used by port-0 entries only, host order, inclusive */
	rendr_u16 port_hi;
};
RENDR_SHARED_ASSERT(sizeof(struct rendr_sk_lookup_target) == 8, "rendr_sk_lookup_target layout");

enum rendr_sk_lookup_stat {
	RENDR_SK_LOOKUP_STAT_ASSIGNED = 0, /* bpf_sk_assign succeeded */
	RENDR_SK_LOOKUP_STAT_NO_SOCKET,    /* target found, slot empty */
	RENDR_SK_LOOKUP_STAT_ASSIGN_FAILED,
	RENDR_SK_LOOKUP_STAT_MAX,
};

#endif /* RENDR_EBPF_SHARED_SK_LOOKUP_SHARED_H */
