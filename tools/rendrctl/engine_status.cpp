// SPDX-License-Identifier: Apache-2.0
#include "engine_status.hpp"

#include <dirent.h>
#include <signal.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string_view>
#include <vector>

namespace rendrctl {

namespace {

struct StatusFile {
  long pid = 0;
  std::string json;
};

// live_status_files reads every <pid>.json in |dir| whose process still exists.
std::vector<StatusFile> live_status_files(const std::string& dir) {
  std::vector<StatusFile> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return out;
  }
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() < 6 || name.substr(name.size() - 5) != ".json") {
      continue;
    }
    char* end = nullptr;
    const long pid = std::strtol(name.c_str(), &end, 10);
    if (pid <= 0 || std::string_view(end) != ".json") {
      continue;
    }
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      continue;  // stale file of a process that is gone
    }
    std::ifstream f(dir + "/" + name);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string js = ss.str();
    while (!js.empty() && (js.back() == '\n' || js.back() == ' ')) {
      js.pop_back();
    }
    if (!js.empty() && js.front() == '{') {
      out.push_back(StatusFile{pid, std::move(js)});
    }
  }
  ::closedir(d);
  return out;
}

}  // namespace

std::vector<std::string_view> pieces(std::string_view s, std::string_view marker) {
  std::vector<std::string_view> out;
  std::size_t pos = s.find(marker);
  while (pos != std::string_view::npos) {
    const std::size_t next = s.find(marker, pos + marker.size());
    out.push_back(s.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos));
    pos = next;
  }
  return out;
}

namespace {
// number_of: |v| as a finite number; nullopt for anything else (a status document is read, not
// trusted: a malformed field must not abort rendrctl, as std::stod's exception did).
std::optional<double> number_of(const std::string& v) {
  if (v.empty()) {
    return 0.0;
  }
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(v.c_str(), &end);
  if (end != v.c_str() + v.size() || errno != 0 || !std::isfinite(d)) {
    return std::nullopt;
  }
  return d;
}
}  // namespace

std::string human_bytes(const std::string& v) {
  const auto n = number_of(v);
  if (!n) {
    return "? B";
  }
  const double b = *n;
  char buf[32];
  if (b >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  } else if (b >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2f MB", b / 1e6);
  } else if (b >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f B", b);
  }
  return buf;
}

std::string rtt_text(const std::string& us) {
  if (us.empty() || us == "null") {
    return "-";
  }
  const auto n = number_of(us);
  if (!n) {
    return "? ms";
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", *n / 1000.0);
  return buf;
}

std::string path_lines(std::string_view flow, const char* indent) {
  std::string out;
  const auto paths_at = flow.find("\"paths\":");
  if (paths_at == std::string_view::npos) {
    return out;
  }
  for (const auto p : pieces(flow.substr(paths_at), "{\"id\":")) {
    char line[512];
    std::snprintf(line, sizeof line,
                  "%spath %s %-8s %s %s->%s %s%s rtt %s jitter %s loss %s/1000 tx %s rx %s\n",
                  indent, rendr::json_scalar(p, "id").c_str(),
                  rendr::json_scalar(p, "name").c_str(),
                  rendr::json_scalar(p, "transport").c_str(),
                  rendr::json_scalar(p, "local").c_str(),
                  rendr::json_scalar(p, "remote").c_str(),
                  rendr::json_scalar(p, "state").c_str(),
                  rendr::json_scalar(p, "active") == "true" ? " (active)" : "",
                  rtt_text(rendr::json_scalar(p, "rtt_us")).c_str(),
                  rtt_text(rendr::json_scalar(p, "jitter_us")).c_str(),
                  rendr::json_scalar(p, "loss_ppt").c_str(),
                  human_bytes(rendr::json_scalar(p, "bytes_tx")).c_str(),
                  human_bytes(rendr::json_scalar(p, "bytes_rx")).c_str());
    out += line;
  }
  return out;
}

std::string timer_line(std::string_view head, const char* indent) {
  const std::string fired = rendr::json_scalar(head, "timer_fired");
  if (fired.empty()) {
    return {};
  }
  std::string hist = "?";
  constexpr std::string_view kHist = "\"timer_late_hist\":[";
  if (const auto at = head.find(kHist); at != std::string_view::npos) {
    const auto from = at + kHist.size();
    if (const auto end = head.find(']', from); end != std::string_view::npos) {
      hist = std::string(head.substr(from, end - from));
    }
  }
  char line[512];
  std::snprintf(line, sizeof line,
                "%stimers fired %s, late max %s (<1/<5/<20/<100/<500/>=500 ms: %s), handler max "
                "%s, lock wait max %s, silence reprieves %s pending / %s starved\n",
                indent, fired.c_str(),
                rtt_text(rendr::json_scalar(head, "timer_late_max_us")).c_str(), hist.c_str(),
                rtt_text(rendr::json_scalar(head, "handler_max_us")).c_str(),
                rtt_text(rendr::json_scalar(head, "io_lock_wait_max_us")).c_str(),
                rendr::json_scalar(head, "silence_pending_reprieves").c_str(),
                rendr::json_scalar(head, "silence_starved_reprieves").c_str());
  return line;
}

void engine_status_json(rendr::JsonWriter& j, const std::string& dir) {
  j.begin_object("engine");
  j.kv("dir", dir);
  j.begin_array("processes");
  for (const auto& f : live_status_files(dir)) {
    j.raw({}, f.json);
  }
  j.end_array();
  j.end_object();
}

void print_engine_status(const std::string& dir) {
  const auto files = live_status_files(dir);
  if (files.empty()) {
    std::printf("engine   no flows (no live status files in %s)\n", dir.c_str());
    return;
  }
  for (const auto& f : files) {
    const std::string_view js = f.json;
    const auto flows = pieces(js, "{\"flow_id\":");
    std::printf("engine   pid %ld (%s): %zu flow(s)\n", f.pid,
                rendr::json_scalar(js, "process").c_str(), flows.size());
    for (const auto flow : flows) {
      const auto paths_at = flow.find("\"paths\":");
      const std::string_view head = flow.substr(0, paths_at);
      std::printf("  flow %s %s %s mode=%s active=%s migrations=%s dups=%s\n",
                  rendr::json_scalar(head, "flow_id").c_str(),
                  rendr::json_scalar(head, "side").c_str(),
                  rendr::json_scalar(head, "state").c_str(),
                  rendr::json_scalar(head, "mode").c_str(),
                  rendr::json_scalar(head, "active_path").c_str(),
                  rendr::json_scalar(head, "migration_count").c_str(),
                  rendr::json_scalar(head, "recv_dups").c_str());
      if (const auto lost = rendr::json_scalar(head, "paths_lost"); !lost.empty() && lost != "0") {
        std::printf("    paths lost %s, last: %s\n", lost.c_str(),
                    rendr::json_scalar(head, "last_path_down").c_str());
      }
      std::fputs(timer_line(head, "    ").c_str(), stdout);
      std::fputs(path_lines(flow, "    ").c_str(), stdout);
    }
  }
}

}  // namespace rendrctl
