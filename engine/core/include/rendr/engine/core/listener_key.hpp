// SPDX-License-Identifier: Apache-2.0
// Listener key: a pre-shared key that authenticates the first frame of every carrier (HELLO,
// BRIDGE_TAG) so that a keyed listener refuses strangers before it allocates anything for them
// (docs/wire.md "Listener key", docs/security.md). I/O-free: the wall clock comes in as Unix
// seconds, nonces from the caller.
//
// The dialing side seals: seal_first_frame encodes the frame with a key block whose tag is the
// first 16 bytes of HMAC-SHA256(key, "rendr-listener-key-v1\0" | frame bytes before the tag).
// The listening side checks with a KeyChecker: a frame passes when it carries a key block of
// version 1 and key id 0, its tag matches, its time is within max_skew of the listener's clock
// and the same tag was not seen before (a replay cache that remembers every tag until its
// time is out of the window, bounded by |replay_capacity|: when full, the oldest entry is
// forgotten and no frame at or before its time passes any more).
//
// One thread at a time (the listener's io thread). Engine core: not part of the embedder API.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/core/wire.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <vector>

namespace rendr::engine {

inline constexpr std::size_t kKeyTagSize = 16;
using KeyTag = std::array<std::uint8_t, kKeyTagSize>;

// key_tag is the tag of |frame|, the frame's bytes up to (without) its tag.
[[nodiscard]] KeyTag key_tag(std::span<const std::uint8_t> key,
                             std::span<const std::byte> frame_before_tag);

// seal_first_frame encodes |f| with a key block (version 1, key id 0, |unix_time|, |nonce|)
// and its tag; a HELLO also gets kCapsKeyed. Errors: invalid_config (key outside 16..64 bytes),
// encode_frame's errors.
[[nodiscard]] Result<std::vector<std::byte>> seal_first_frame(
    FirstFrame f, std::span<const std::uint8_t> key, std::uint32_t unix_time,
    const std::array<std::uint8_t, 8>& nonce);

enum class KeyVerdict : std::uint8_t {
  ok,
  missing,   // no key block (an unkeyed or legacy peer)
  bad,       // wrong tag, unknown version or key id
  stale,     // time outside max_skew, or older than what a full replay cache still covers
  replayed,  // this tag was seen before
};
[[nodiscard]] std::string_view to_string(KeyVerdict v);

class KeyChecker {
 public:
  KeyChecker(std::vector<std::uint8_t> key, std::chrono::seconds max_skew,
             std::size_t replay_capacity);

  // check decides on a fresh carrier's first frame: |frame| its exact bytes (no carrier
  // prefix), |ff| what classify_first_frame made of them, |unix_now| the listener's clock.
  // A frame that passes is remembered (the same bytes again are a replay).
  [[nodiscard]] KeyVerdict check(std::span<const std::byte> frame, const FirstFrame& ff,
                                 std::uint64_t unix_now);
  [[nodiscard]] std::size_t remembered() const { return seen_.size(); }

 private:
  void expire(std::uint64_t unix_now);
  std::vector<std::uint8_t> key_;
  std::uint64_t skew_;
  std::size_t capacity_;
  std::set<KeyTag> seen_;
  std::multimap<std::uint32_t, KeyTag> by_time_;
  std::optional<std::uint32_t> floor_;  // frames at or before this time are refused
};

}  // namespace rendr::engine
