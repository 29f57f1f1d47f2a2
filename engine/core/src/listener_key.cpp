// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/core/listener_key.hpp>

#include <rendr/engine/errors.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <variant>

namespace rendr::engine {

namespace {

constexpr char kLabel[] = "rendr-listener-key-v1";  // the terminating NUL is hashed too

const KeyAuth* auth_of(const FirstFrame& ff) {
  return std::visit([](const auto& f) { return f.auth ? &*f.auth : nullptr; }, ff);
}

}  // namespace

KeyTag key_tag(std::span<const std::uint8_t> key, std::span<const std::byte> frame_before_tag) {
  std::vector<unsigned char> msg;
  msg.reserve(sizeof kLabel + frame_before_tag.size());
  msg.insert(msg.end(), kLabel, kLabel + sizeof kLabel);
  const auto* f = reinterpret_cast<const unsigned char*>(frame_before_tag.data());
  msg.insert(msg.end(), f, f + frame_before_tag.size());
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  KeyTag tag{};
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), msg.data(), msg.size(), md,
           &md_len) != nullptr &&
      md_len >= tag.size()) {
    std::memcpy(tag.data(), md, tag.size());
  }
  return tag;
}

Result<std::vector<std::byte>> seal_first_frame(FirstFrame f, std::span<const std::uint8_t> key,
                                                std::uint32_t unix_time,
                                                const std::array<std::uint8_t, 8>& nonce) {
  if (key.size() < kMinListenerKey || key.size() > kMaxListenerKey) {
    return make_error(errc::invalid_config, "listener key must be 16 to 64 bytes");
  }
  KeyAuth a;
  a.time = unix_time;
  a.nonce = nonce;
  Frame frame = std::visit(
      [&a](auto x) -> Frame {
        x.auth = a;
        x.legacy = false;
        if constexpr (std::is_same_v<decltype(x), Hello>) {
          x.caps |= kCapsKeyed;
        }
        return Frame{std::move(x)};
      },
      std::move(f));
  std::vector<std::byte> out;
  RENDR_TRY(encode_frame(frame, out));
  const auto body = std::span<const std::byte>(out).first(out.size() - kKeyTagSize);
  const KeyTag tag = key_tag(key, body);
  std::memcpy(out.data() + out.size() - kKeyTagSize, tag.data(), tag.size());
  return out;
}

std::string_view to_string(KeyVerdict v) {
  switch (v) {
    case KeyVerdict::ok: return "ok";
    case KeyVerdict::missing: return "missing";
    case KeyVerdict::bad: return "bad";
    case KeyVerdict::stale: return "stale";
    case KeyVerdict::replayed: return "replayed";
  }
  return "?";
}

KeyChecker::KeyChecker(std::vector<std::uint8_t> key, std::chrono::seconds max_skew,
                       std::size_t replay_capacity)
    : key_(std::move(key)),
      skew_(static_cast<std::uint64_t>(std::max<std::int64_t>(max_skew.count(), 0))),
      capacity_(std::max<std::size_t>(replay_capacity, 1)) {}

void KeyChecker::expire(std::uint64_t unix_now) {
  // A tag can be replayed while |now - time| <= skew: keep it until its time is out of reach.
  while (!by_time_.empty() && by_time_.begin()->first + skew_ < unix_now) {
    seen_.erase(by_time_.begin()->second);
    by_time_.erase(by_time_.begin());
  }
}

KeyVerdict KeyChecker::check(std::span<const std::byte> frame, const FirstFrame& ff,
                             std::uint64_t unix_now) {
  const KeyAuth* a = auth_of(ff);
  if (a == nullptr) {
    return KeyVerdict::missing;
  }
  if (a->version != kKeyAuthVersion || a->key_id != 0 || frame.size() < kKeyAuthSize) {
    return KeyVerdict::bad;
  }
  const KeyTag want = key_tag(key_, frame.first(frame.size() - kKeyTagSize));
  if (CRYPTO_memcmp(want.data(), a->tag.data(), want.size()) != 0) {
    return KeyVerdict::bad;
  }
  const std::uint64_t t = a->time;
  if ((t > unix_now ? t - unix_now : unix_now - t) > skew_ || (floor_ && a->time <= *floor_)) {
    return KeyVerdict::stale;
  }
  expire(unix_now);
  if (seen_.count(a->tag) != 0) {
    return KeyVerdict::replayed;
  }
  if (seen_.size() >= capacity_) {
    // Full: forget the oldest and refuse everything up to its time from now on, so that a
    // forgotten tag can never pass again.
    floor_ = std::max(floor_.value_or(0), by_time_.begin()->first);
    seen_.erase(by_time_.begin()->second);
    by_time_.erase(by_time_.begin());
    if (a->time <= *floor_) {
      return KeyVerdict::stale;
    }
  }
  seen_.insert(a->tag);
  by_time_.emplace(a->time, a->tag);
  return KeyVerdict::ok;
}

}  // namespace rendr::engine
