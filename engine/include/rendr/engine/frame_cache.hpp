// SPDX-License-Identifier: Apache-2.0
// Process-wide cache of frame buffers. Every flow recycles its 32 KiB frame buffers in a pool of
// its own; what a pool cannot keep (a burst beyond its bound, a flow that closed or went idle)
// goes here instead of back to the C allocator, and the next flow that needs buffers takes them
// from here. A fresh page costs a page fault (about 10 us on a virtualised host, where a warm
// 32 KiB copy takes 2 us), and the allocator gives freed memory back to the kernel at once, so
// without this cache every new flow and every burst paid again for the pages it touched.
// Bounded (default 64 MiB) and emptied when no buffer was taken or given for 5 s.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rendr::engine {

struct FrameCacheStats {
  std::size_t held_bytes = 0;    // capacity of the buffers held now
  std::size_t held_buffers = 0;
  std::size_t limit_bytes = 0;
  std::uint64_t reused = 0;      // buffers handed to a flow from the cache
  std::uint64_t released = 0;    // buffers freed because the cache was full or idle
};

[[nodiscard]] FrameCacheStats frame_cache_stats();
// set_frame_cache_limit bounds the bytes the cache holds (0 turns it off); buffers over the new
// bound are freed at once.
void set_frame_cache_limit(std::size_t bytes);

}  // namespace rendr::engine
