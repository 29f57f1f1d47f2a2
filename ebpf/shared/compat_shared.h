/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * compat_shared.h - the tiny compat block every ebpf/shared/<family>_shared.h includes (STYLE B2):
 * fixed-width types that mean the same thing to clang -target bpf and to g++, and a size
 * assertion both compilers evaluate. Nothing else belongs here.
 */
#ifndef RENDR_EBPF_SHARED_COMPAT_SHARED_H
#define RENDR_EBPF_SHARED_COMPAT_SHARED_H

#if defined(__bpf__)
#include <linux/types.h>
typedef __u8 rendr_u8;
typedef __u16 rendr_u16;
typedef __u32 rendr_u32;
typedef __u64 rendr_u64;
#define RENDR_SHARED_INLINE static __always_inline
#define RENDR_SHARED_ASSERT(cond, msg) _Static_assert(cond, msg)
#elif defined(__cplusplus)
#include <cstdint>
typedef std::uint8_t rendr_u8;
typedef std::uint16_t rendr_u16;
typedef std::uint32_t rendr_u32;
typedef std::uint64_t rendr_u64;
#define RENDR_SHARED_INLINE static inline
#define RENDR_SHARED_ASSERT(cond, msg) static_assert(cond, msg)
#else
#error "ebpf/shared headers are read by clang -target bpf and by C++ only"
#endif

#endif /* RENDR_EBPF_SHARED_COMPAT_SHARED_H */
