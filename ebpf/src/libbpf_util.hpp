// SPDX-License-Identifier: Apache-2.0
// Private helpers shared by the loaders: libbpf logging setup, libbpf error conversion,
// per-CPU map reads, and the calling thread's network namespace identity.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

struct bpf_map;

namespace rendr::ebpf::detail {

// ensure_libbpf_logging installs rendr's libbpf print callback (once per process).
void ensure_libbpf_logging();

// append_warning adds one libbpf warning line to the calling thread's LibbpfWarnings, if any.
void append_warning(const std::string& line);

// warnings_quiet tells whether the calling thread's innermost LibbpfWarnings is quiet.
bool warnings_quiet();

// LibbpfWarnings collects libbpf's warning lines printed by the calling thread while it lives,
// so a failed open/load/attach can carry the verifier's complaint in its Error context. A
// |quiet| collector also keeps them out of the log: for calls whose complaint is expected and
// handled (creating a clsact qdisc that exists prints "Exclusivity flag on").
class LibbpfWarnings {
 public:
  explicit LibbpfWarnings(bool quiet = false);
  ~LibbpfWarnings();
  LibbpfWarnings(const LibbpfWarnings&) = delete;
  LibbpfWarnings& operator=(const LibbpfWarnings&) = delete;
  // tail returns the last |max| characters collected ("" when nothing was printed).
  [[nodiscard]] std::string tail(std::size_t max = 1500) const;

 private:
  LibbpfWarnings* prev_;
  std::string text_;
  bool quiet_;
  friend void append_warning(const std::string& line);
  friend bool warnings_quiet();
};

// libbpf_error converts a libbpf return value (negative errno) or, when |ret| is 0 or positive,
// the current errno, into an Error with |context|.
[[nodiscard]] Error libbpf_error(int ret, std::string context);

// possible_cpus is libbpf_num_possible_cpus() (cached), or an error.
[[nodiscard]] Result<unsigned> possible_cpus();

// lookup_percpu reads every CPU's copy of |key| in per-CPU map |map| (value size |value_size|,
// a multiple of 8) into one buffer of possible_cpus() * value_size bytes.
[[nodiscard]] Result<std::vector<std::byte>> lookup_percpu(const bpf_map* map, const void* key,
                                                           std::size_t key_size,
                                                           std::size_t value_size,
                                                           const std::string& what);

// sum_percpu adds, field by field, the per-CPU copies in |buf| of a struct of u64 fields.
template <typename T>
[[nodiscard]] T sum_percpu(const std::vector<std::byte>& buf) {
  static_assert(sizeof(T) % sizeof(std::uint64_t) == 0, "per-CPU struct of u64 fields");
  constexpr std::size_t kFields = sizeof(T) / sizeof(std::uint64_t);
  std::uint64_t total[kFields] = {};
  for (std::size_t off = 0; off + sizeof(T) <= buf.size(); off += sizeof(T)) {
    std::uint64_t one[kFields];
    std::memcpy(one, buf.data() + off, sizeof(T));
    for (std::size_t i = 0; i < kFields; ++i) {
      total[i] += one[i];
    }
  }
  T out;
  std::memcpy(&out, total, sizeof(T));
  return out;
}

}  // namespace rendr::ebpf::detail
