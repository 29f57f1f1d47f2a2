// SPDX-License-Identifier: Apache-2.0
// Byte helpers: big-endian (network order) writer and bounds-checked reader for wire formats and
// snapshots. ByteReader never reads past its span: every get returns false once it would, and the
// reader stays failed, so decoders check once at the end or at each step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rendr {

class ByteWriter {
 public:
  void u8(std::uint8_t v) { buf_.push_back(static_cast<std::byte>(v)); }
  void u16(std::uint16_t v) {
    u8(static_cast<std::uint8_t>(v >> 8));
    u8(static_cast<std::uint8_t>(v));
  }
  void u32(std::uint32_t v) {
    u16(static_cast<std::uint16_t>(v >> 16));
    u16(static_cast<std::uint16_t>(v));
  }
  void u64(std::uint64_t v) {
    u32(static_cast<std::uint32_t>(v >> 32));
    u32(static_cast<std::uint32_t>(v));
  }
  void bytes(std::span<const std::byte> b) { buf_.insert(buf_.end(), b.begin(), b.end()); }
  // blob writes a u32 length then the bytes.
  void blob(std::span<const std::byte> b) {
    u32(static_cast<std::uint32_t>(b.size()));
    bytes(b);
  }
  void str(std::string_view s) { blob(std::as_bytes(std::span(s.data(), s.size()))); }
  // patch_u32 overwrites 4 bytes at |pos| (used for length fields written before the body).
  void patch_u32(std::size_t pos, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) {
      buf_[pos + static_cast<std::size_t>(i)] = static_cast<std::byte>(v >> (24 - 8 * i));
    }
  }
  [[nodiscard]] std::size_t size() const { return buf_.size(); }
  [[nodiscard]] const std::vector<std::byte>& data() const { return buf_; }
  [[nodiscard]] std::vector<std::byte> take() { return std::move(buf_); }

 private:
  std::vector<std::byte> buf_;
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const std::byte> data) : data_(data) {}

  [[nodiscard]] bool u8(std::uint8_t& v) {
    if (!need(1)) {
      return false;
    }
    v = static_cast<std::uint8_t>(data_[pos_++]);
    return true;
  }
  [[nodiscard]] bool u16(std::uint16_t& v) {
    std::uint8_t a = 0;
    std::uint8_t b = 0;
    if (!need(2) || !u8(a) || !u8(b)) {
      return false;
    }
    v = static_cast<std::uint16_t>((a << 8) | b);
    return true;
  }
  [[nodiscard]] bool u32(std::uint32_t& v) {
    std::uint16_t a = 0;
    std::uint16_t b = 0;
    if (!need(4) || !u16(a) || !u16(b)) {
      return false;
    }
    v = (static_cast<std::uint32_t>(a) << 16) | b;
    return true;
  }
  [[nodiscard]] bool u64(std::uint64_t& v) {
    std::uint32_t a = 0;
    std::uint32_t b = 0;
    if (!need(8) || !u32(a) || !u32(b)) {
      return false;
    }
    v = (static_cast<std::uint64_t>(a) << 32) | b;
    return true;
  }
  // bytes reads exactly |n| bytes into a view of the input.
  [[nodiscard]] bool bytes(std::size_t n, std::span<const std::byte>& out) {
    if (!need(n)) {
      return false;
    }
    out = data_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  // blob reads a u32 length (at most |max|) then that many bytes.
  [[nodiscard]] bool blob(std::size_t max, std::span<const std::byte>& out) {
    std::uint32_t n = 0;
    if (!u32(n)) {
      return false;
    }
    if (n > max) {
      failed_ = true;
      return false;
    }
    return bytes(n, out);
  }
  [[nodiscard]] std::size_t remaining() const { return failed_ ? 0 : data_.size() - pos_; }
  [[nodiscard]] std::size_t position() const { return pos_; }
  [[nodiscard]] bool failed() const { return failed_; }

 private:
  bool need(std::size_t n) {
    if (failed_ || data_.size() - pos_ < n) {
      failed_ = true;
      return false;
    }
    return true;
  }
  std::span<const std::byte> data_;
  std::size_t pos_ = 0;
  bool failed_ = false;
};

// as_bytes_of views a string's characters as bytes.
[[nodiscard]] inline std::span<const std::byte> as_bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

// to_hex renders bytes as lowercase hex.
[[nodiscard]] std::string to_hex(std::span<const std::byte> b);

}  // namespace rendr
