// SPDX-License-Identifier: GPL-2.0-only
/*
 * steer_sk_lookup.bpf.c - the sk_lookup family (kernel >= 5.9): attached to a network
 * namespace, it runs whenever the stack looks for a listening TCP (or unconnected UDP) socket
 * and hands connections to a VIP address/port (or to a whole port range of it) to a socket
 * registered in sk_lookup_socks, so a host serves the VIP without binding it on every port.
 * Established sockets (including restored TCP_REPAIR sockets) are found in the ehash before
 * sk_lookup runs, so they never pass through here.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "shared/sk_lookup_shared.h"

char LICENSE[] SEC("license") = "GPL";

/* AF_INET / AF_INET6 as the running kernel numbers them, set by SkLookup from <sys/socket.h>
 * before load: the UAPI headers the BPF side reads do not define them (STYLE B6). */
const volatile __u32 af_inet = 0;
const volatile __u32 af_inet6 = 0;

/* Writer: SkLookup (listener fds). Reader: this program. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 64); /* SkLookup may resize before load */
	__type(key, __u32);
	__type(value, __u64);
} sk_lookup_socks SEC(".maps");

/* Writer: SkLookup. Reader: this program. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct rendr_sk_lookup_key);
	__type(value, struct rendr_sk_lookup_target);
} sk_lookup_targets SEC(".maps");

/* Writer: this program. Reader: SkLookup (sums CPUs). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RENDR_SK_LOOKUP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sk_lookup_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&sk_lookup_stats, &stat);

	if (v)
		(*v)++;
}

SEC("sk_lookup")
int steer_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct rendr_sk_lookup_key key = {};
	struct rendr_sk_lookup_target *t;
	struct bpf_sock *sk;
	__u32 port = ctx->local_port;
	__u32 slot;
	long err;

	if (ctx->family == af_inet) {
		__u32 a = ctx->local_ip4;

		key.family = RENDR_FAMILY_V4;
		__builtin_memcpy(key.addr, &a, 4);
	} else if (ctx->family == af_inet6) {
		__u32 a[4];

		a[0] = ctx->local_ip6[0];
		a[1] = ctx->local_ip6[1];
		a[2] = ctx->local_ip6[2];
		a[3] = ctx->local_ip6[3];
		key.family = RENDR_FAMILY_V6;
		__builtin_memcpy(key.addr, a, 16);
	} else {
		return SK_PASS;
	}
	key.proto = (__u8)ctx->protocol;
	key.port = (__u16)port;

	t = bpf_map_lookup_elem(&sk_lookup_targets, &key);
	if (!t) {
		key.port = 0;
		t = bpf_map_lookup_elem(&sk_lookup_targets, &key);
		if (!t || port < t->port_lo || port > t->port_hi)
			return SK_PASS;
	}
	slot = t->slot;
	sk = bpf_map_lookup_elem(&sk_lookup_socks, &slot);
	if (!sk) {
		count(RENDR_SK_LOOKUP_STAT_NO_SOCKET);
		return SK_PASS;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	count(err == 0 ? RENDR_SK_LOOKUP_STAT_ASSIGNED : RENDR_SK_LOOKUP_STAT_ASSIGN_FAILED);
	/* SK_PASS either way: on failure the regular listener lookup still runs. */
	return SK_PASS;
}
