/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * parse.h - packet parsing shared by the tc programs: Ethernet + IPv4/IPv6 (+ up to
 * RENDR_IPV6_MAX_EXT hop-by-hop/routing/destination-options headers) + TCP -> rendr_flow_key.
 *
 * Reads through bpf_skb_load_bytes rather than direct packet access, so headers in a non-linear
 * skb (GRO/GSO on veth) are seen without a bpf_skb_pull_data and the verifier needs no
 * variable-offset packet-pointer proofs. Devices must carry an Ethernet header at tc (veth,
 * physical NICs and lo do; TUN devices do not).
 */
#ifndef RENDR_EBPF_LIB_PARSE_H
#define RENDR_EBPF_LIB_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "shared/flow_shared.h"

#define RENDR_IPV6_MAX_EXT 4
/* Fragment offset bits of iphdr.frag_off (RFC 791); the UAPI header does not name them. */
#define RENDR_IP_FRAG_OFFSET_MASK 0x1fff

/* TCP flag bits in byte 13 of the TCP header (RFC 9293). */
#define RENDR_TCP_FIN 0x01
#define RENDR_TCP_SYN 0x02
#define RENDR_TCP_RST 0x04
#define RENDR_TCP_ACK 0x10

/*
 * rendr_parse_tcp_meta fills |key| (not normalised: src/dst as in the packet), |tcp_flags| and
 * |meta| (ACK number, raw window, payload length) for an
 * IPv4/IPv6 TCP packet. Returns 0, or -1 for anything else (non-IP, non-TCP, non-first
 * fragments, IPv6 fragments, truncated headers) - callers let those pass.
 */
struct rendr_tcp_meta {
	__u32 ack_seq;  /* host order */
	__u16 window;   /* raw, host order */
	__u16 payload;  /* TCP payload bytes (0 for a bare ACK), clamped to 65535 */
};

static __always_inline int rendr_parse_tcp_meta(struct __sk_buff *skb,
						struct rendr_flow_key *key, __u8 *tcp_flags,
						struct rendr_tcp_meta *meta)
{
	__u8 th[16]; /* ports, seq, ack, data offset, flags, window */
	__u32 off = ETH_HLEN;
	__u32 l3_end = 0;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.ihl < 5 || ip.protocol != IPPROTO_TCP)
			return -1;
		if (ip.frag_off & bpf_htons(RENDR_IP_FRAG_OFFSET_MASK))
			return -1;
		key->family = RENDR_FAMILY_V4;
		/* tot_len 0: a BIG TCP aggregate (GRO/GSO beyond 64 KiB), as long as the skb. */
		l3_end = ip.tot_len ? ETH_HLEN + bpf_ntohs(ip.tot_len) : skb->len;
		__builtin_memcpy(key->src_addr, &ip.saddr, 4);
		__builtin_memcpy(key->dst_addr, &ip.daddr, 4);
		off += ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		__u8 nexthdr;
		int i;

		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
			return -1;
		key->family = RENDR_FAMILY_V6;
		/* payload_len 0: a jumbogram / BIG TCP aggregate, as long as the skb. */
		l3_end = ip6.payload_len ? ETH_HLEN + sizeof(ip6) + bpf_ntohs(ip6.payload_len)
					 : skb->len;
		__builtin_memcpy(key->src_addr, &ip6.saddr, 16);
		__builtin_memcpy(key->dst_addr, &ip6.daddr, 16);
		off += sizeof(ip6);
		nexthdr = ip6.nexthdr;
		for (i = 0; i < RENDR_IPV6_MAX_EXT; i++) {
			struct ipv6_opt_hdr oh;

			if (nexthdr != IPPROTO_HOPOPTS && nexthdr != IPPROTO_ROUTING &&
			    nexthdr != IPPROTO_DSTOPTS)
				break;
			if (bpf_skb_load_bytes(skb, off, &oh, sizeof(oh)) < 0)
				return -1;
			nexthdr = oh.nexthdr;
			off += ((__u32)oh.hdrlen + 1) * 8;
		}
		if (nexthdr != IPPROTO_TCP)
			return -1;
	} else {
		return -1;
	}

	if (bpf_skb_load_bytes(skb, off, th, sizeof(th)) < 0)
		return -1;
	key->proto = IPPROTO_TCP;
	__builtin_memcpy(&key->src_port, &th[0], 2);
	__builtin_memcpy(&key->dst_port, &th[2], 2);
	*tcp_flags = th[13];
	{
		__u32 ack;
		__u16 win;
		__u32 hdr_end = off + ((__u32)(th[12] >> 4)) * 4;

		__builtin_memcpy(&ack, &th[8], 4);
		__builtin_memcpy(&win, &th[14], 2);
		meta->ack_seq = bpf_ntohl(ack);
		meta->window = bpf_ntohs(win);
		meta->payload = l3_end > hdr_end ? (__u16)(l3_end - hdr_end > 65535 ? 65535 : l3_end - hdr_end) : 0;
	}
	return 0;
}

/* rendr_parse_tcp_meta without the meta. */
static __always_inline int rendr_parse_tcp(struct __sk_buff *skb, struct rendr_flow_key *key,
					   __u8 *tcp_flags)
{
	struct rendr_tcp_meta meta;

	return rendr_parse_tcp_meta(skb, key, tcp_flags, &meta);
}

#endif /* RENDR_EBPF_LIB_PARSE_H */
