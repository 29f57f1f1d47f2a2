// SPDX-License-Identifier: Apache-2.0
#include "support/pattern.hpp"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstring>
#include <stdexcept>

namespace rendr::test {

Pattern::Pattern(std::uint32_t seed) : base_(kChunk) {
  for (std::uint32_t i = 0; i < kChunk / 32; ++i) {
    unsigned char in[8];
    for (int k = 0; k < 4; ++k) {
      in[k] = static_cast<unsigned char>(seed >> (24 - 8 * k));
      in[4 + k] = static_cast<unsigned char>(i >> (24 - 8 * k));
    }
    unsigned char md[32];
    SHA256(in, sizeof in, md);
    std::memcpy(base_.data() + i * 32, md, 32);
  }
}

void Pattern::fill(std::uint64_t offset, std::span<std::byte> out) const {
  std::size_t done = 0;
  while (done < out.size()) {
    std::uint64_t pos = offset + done;
    std::uint64_t chunk = pos / kChunk;
    std::size_t in = static_cast<std::size_t>(pos % kChunk);
    std::size_t n = std::min(kChunk - in, out.size() - done);
    std::memcpy(out.data() + done, base_.data() + in, n);
    // Overlay the chunk counter on bytes 0..7 of the chunk.
    for (std::size_t k = in; k < 8 && k < in + n; ++k) {
      out[done + (k - in)] = static_cast<std::byte>(chunk >> (8 * k));
    }
    done += n;
  }
}

long long Pattern::mismatch(std::uint64_t offset, std::span<const std::byte> data) const {
  std::vector<std::byte> want(std::min<std::size_t>(data.size(), 1U << 20));
  std::size_t done = 0;
  while (done < data.size()) {
    std::size_t n = std::min(want.size(), data.size() - done);
    fill(offset + done, std::span(want).first(n));
    if (std::memcmp(want.data(), data.data() + done, n) != 0) {
      for (std::size_t i = 0; i < n; ++i) {
        if (want[i] != data[done + i]) {
          return static_cast<long long>(done + i);
        }
      }
    }
    done += n;
  }
  return -1;
}

std::string Pattern::sha256_hex(std::uint64_t length) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<std::byte> buf(1U << 20);
  std::uint64_t done = 0;
  while (done < length) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), length - done));
    fill(done, std::span(buf).first(n));
    EVP_DigestUpdate(ctx, buf.data(), n);
    done += n;
  }
  unsigned char md[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

std::string sha256_hex(std::span<const std::byte> data) {
  unsigned char md[32];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : md) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

}  // namespace rendr::test
