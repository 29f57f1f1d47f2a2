/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * flow_shared.h - the flow key used by the freeze and steer maps, plus the one normalisation
 * function both sides call (so the BPF program and the C++ loader can never disagree on it).
 *
 * A key names one TCP flow by family, protocol, addresses and ports exactly as they appear in
 * the packet (addresses and ports in network byte order). IPv4 addresses occupy the first 4
 * bytes of the 16-byte address fields, the rest is zero. All padding is explicit and zero
 * (STYLE B3: hash lookups compare every byte).
 */
#ifndef RENDR_EBPF_SHARED_FLOW_SHARED_H
#define RENDR_EBPF_SHARED_FLOW_SHARED_H

#include "shared/compat_shared.h"

/* Values of rendr_flow_key.family (and the other *_key.family fields). Not AF_* on purpose:
 * the BPF side has no libc, and these never reach a kernel API. */
enum rendr_family {
	RENDR_FAMILY_V4 = 4,
	RENDR_FAMILY_V6 = 6,
};

struct rendr_flow_key {
	rendr_u8 family;    /* enum rendr_family */
	rendr_u8 proto;     /* IPPROTO_TCP */
	rendr_u16 pad0;     /* zero */
	rendr_u16 src_port; /* network byte order */
	rendr_u16 dst_port; /* network byte order */
	rendr_u8 src_addr[16];
	rendr_u8 dst_addr[16];
};
RENDR_SHARED_ASSERT(sizeof(struct rendr_flow_key) == 40, "rendr_flow_key layout");

/*
 * rendr_flow_key_normalise orders the two endpoints so that (src_addr, src_port) is the
 * smaller one (bytewise address compare, then port as stored). Both directions of a connection
 * then produce the same key: the freeze map holds one entry per connection.
 */
RENDR_SHARED_INLINE void rendr_flow_key_normalise(struct rendr_flow_key *k)
{
	int cmp = 0;
	int i;

	for (i = 0; i < 16; i++) {
		if (cmp == 0 && k->src_addr[i] != k->dst_addr[i])
			cmp = k->src_addr[i] < k->dst_addr[i] ? -1 : 1;
	}
	if (cmp == 0 && k->src_port != k->dst_port)
		cmp = k->src_port < k->dst_port ? -1 : 1;
	if (cmp <= 0)
		return;
	for (i = 0; i < 16; i++) {
		rendr_u8 t = k->src_addr[i];

		k->src_addr[i] = k->dst_addr[i];
		k->dst_addr[i] = t;
	}
	{
		rendr_u16 p = k->src_port;

		k->src_port = k->dst_port;
		k->dst_port = p;
	}
}

#endif /* RENDR_EBPF_SHARED_FLOW_SHARED_H */
