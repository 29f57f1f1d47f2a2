// SPDX-License-Identifier: Apache-2.0
// Where `rendrctl status` finds the rendr-tun processes of a host (docs/tun-ingress.md
// "Status"): each rendr-tun serves its status JSON (tun_status.hpp) on the Unix socket
// <dir>/tun-<pid>.sock, <dir> being the engine status directory the engine's status files
// already live in ($RENDR_ENGINE_STATUS_DIR or /run/rendr/engine; `--status-dir` overrides).
// Shared by rendr-tun (publishes) and rendrctl (reads), header-only, no I/O.
#pragma once

#include <charconv>
#include <optional>
#include <string>
#include <string_view>

namespace rendr::tun {

inline constexpr std::string_view kPublishedPrefix = "tun-";
inline constexpr std::string_view kPublishedSuffix = ".sock";

// published_socket: <dir>/tun-<pid>.sock.
[[nodiscard]] inline std::string published_socket(const std::string& dir, long pid) {
  return dir + "/" + std::string(kPublishedPrefix) + std::to_string(pid) +
         std::string(kPublishedSuffix);
}

// published_pid: the pid in a directory entry named tun-<pid>.sock; nullopt for any other name.
[[nodiscard]] inline std::optional<long> published_pid(std::string_view name) {
  if (name.size() <= kPublishedPrefix.size() + kPublishedSuffix.size() ||
      name.substr(0, kPublishedPrefix.size()) != kPublishedPrefix ||
      name.substr(name.size() - kPublishedSuffix.size()) != kPublishedSuffix) {
    return std::nullopt;
  }
  const auto digits = name.substr(kPublishedPrefix.size(),
                                  name.size() - kPublishedPrefix.size() - kPublishedSuffix.size());
  long pid = 0;
  const auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
  if (ec != std::errc() || p != digits.data() + digits.size() || pid <= 0) {
    return std::nullopt;
  }
  return pid;
}

}  // namespace rendr::tun
