// SPDX-License-Identifier: Apache-2.0
#include "tun_status_reader.hpp"

#include "engine_status.hpp"
#include "rendr-tun/tun_status_dir.hpp"

#include <rendr/common/unique_fd.hpp>

#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>

namespace rendrctl {

namespace {

constexpr std::size_t kMaxDoc = 16U << 20;  // a status document larger than this is refused

std::string connect_error(int err) {
  switch (err) {
    case ECONNREFUSED:
      return "connection refused: nothing listens (a stale socket: its rendr-tun ended; the "
             "next rendr-tun to start removes it)";
    case ENOENT:
      return "no such socket";
    case ENAMETOOLONG:
      return "socket path too long";
    case EAGAIN:
      return "busy: its accept queue is full (the process may be stopped or hung)";
    case EACCES:
    case EPERM:
      return std::string(std::strerror(err)) + " (run rendrctl as the socket's owner or root)";
    default:
      return std::strerror(err);
  }
}

// flat_members: the "k":v members of the flat object under |key| in |doc| (numbers and
// strings as written), in order; empty when absent.
std::vector<std::pair<std::string, std::string>> flat_members(std::string_view doc,
                                                              std::string_view key) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::string marker = "\"" + std::string(key) + "\":{";
  const auto at = doc.find(marker);
  if (at == std::string_view::npos) {
    return out;
  }
  const auto end = doc.find('}', at);
  std::string_view body = doc.substr(at + marker.size(), end - at - marker.size());
  while (!body.empty()) {
    const auto colon = body.find("\":");
    if (body.front() != '"' || colon == std::string_view::npos) {
      break;
    }
    const std::string k(body.substr(1, colon - 1));
    const auto comma = body.find(',', colon);
    out.emplace_back(k, rendr::json_scalar(body, k));
    body = comma == std::string_view::npos ? std::string_view() : body.substr(comma + 1);
  }
  return out;
}

std::string members_line(const char* label,
                         const std::vector<std::pair<std::string, std::string>>& m) {
  if (m.empty()) {
    return {};
  }
  std::string line = std::string("  ") + label;
  for (const auto& [k, v] : m) {
    line += " " + k + "=" + v;
  }
  return line + "\n";
}

}  // namespace

std::vector<TunSource> tun_sources(const std::string& dir,
                                   const std::vector<std::string>& explicit_sockets) {
  std::vector<TunSource> out;
  if (DIR* d = ::opendir(dir.c_str()); d != nullptr) {
    while (const dirent* e = ::readdir(d)) {
      if (const auto pid = rendr::tun::published_pid(e->d_name)) {
        out.push_back(TunSource{dir + "/" + e->d_name, *pid});
      }
    }
    ::closedir(d);
  }
  std::sort(out.begin(), out.end(),
            [](const TunSource& a, const TunSource& b) { return a.pid < b.pid; });
  std::set<std::string> seen;
  for (const auto& s : out) {
    seen.insert(s.socket);
  }
  for (const auto& p : explicit_sockets) {
    if (seen.insert(p).second) {
      out.push_back(TunSource{p, 0});
    }
  }
  return out;
}

std::vector<TunReply> read_tun_status(const std::vector<TunSource>& sources, int timeout_ms) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::vector<TunReply> out;
  std::vector<rendr::UniqueFd> fds;  // one per source; closed = done
  for (const auto& src : sources) {
    TunReply r{src, {}, {}};
    rendr::UniqueFd fd;
    // A Unix stream connect does not wait: it succeeds into the listener's backlog (even when
    // the process is stopped), or fails at once.
    if (auto s = rendr::UniqueFd::connect_unix(src.socket, SOCK_STREAM | SOCK_NONBLOCK); !s) {
      r.error = connect_error(s.error().code.value());
    } else {
      fd = std::move(*s);
    }
    out.push_back(std::move(r));
    fds.push_back(std::move(fd));
  }
  for (;;) {
    std::vector<pollfd> pfds;
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i]) {
        pfds.push_back(pollfd{fds[i].get(), POLLIN, 0});
        idx.push_back(i);
      }
    }
    if (pfds.empty()) {
      break;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    const int n = left > 0 ? ::poll(pfds.data(), pfds.size(), static_cast<int>(left)) : 0;
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      for (const auto i : idx) {
        out[i].error = "no answer within " + std::to_string(timeout_ms) +
                       " ms (the process may be stopped or hung)";
        out[i].doc.clear();
        fds[i] = rendr::UniqueFd();
      }
      break;
    }
    for (std::size_t k = 0; k < pfds.size(); ++k) {
      if (pfds[k].revents == 0) {
        continue;
      }
      const std::size_t i = idx[k];
      char buf[16384];
      const ssize_t got = ::read(fds[i].get(), buf, sizeof buf);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
        continue;
      }
      if (got > 0) {
        out[i].doc.append(buf, static_cast<std::size_t>(got));
        if (out[i].doc.size() > kMaxDoc) {
          out[i].error = "status document larger than 16 MiB";
          out[i].doc.clear();
          fds[i] = rendr::UniqueFd();
        }
        continue;
      }
      if (got < 0) {
        out[i].error = std::string("read: ") + std::strerror(errno);
        out[i].doc.clear();
      } else {
        while (!out[i].doc.empty() && (out[i].doc.back() == '\n' || out[i].doc.back() == ' ')) {
          out[i].doc.pop_back();
        }
        if (out[i].doc.size() < 2 || out[i].doc.front() != '{' || out[i].doc.back() != '}') {
          out[i].error =
              out[i].doc.empty() ? "closed without an answer" : "not a rendr-tun status document";
          out[i].doc.clear();
        }
      }
      fds[i] = rendr::UniqueFd();
    }
  }
  return out;
}

void tun_status_json(rendr::JsonWriter& j, const std::vector<TunReply>& replies) {
  j.begin_array("tun");
  for (const auto& r : replies) {
    if (r.error.empty()) {
      // The document with "socket" in front: {"socket":"...","role":...}.
      std::string doc = "{\"socket\":" + rendr::JsonWriter::quote(r.source.socket);
      doc += r.doc.size() > 2 ? "," + r.doc.substr(1) : "}";
      j.raw({}, doc);
      continue;
    }
    j.begin_object();
    j.kv("socket", r.source.socket);
    if (r.source.pid > 0) {
      j.kv("pid", static_cast<std::int64_t>(r.source.pid));
    }
    j.kv("error", r.error);
    j.end_object();
  }
  j.end_array();
}

std::string tun_status_text(const std::vector<TunReply>& replies, const std::string& dir) {
  if (replies.empty()) {
    return "tun      no rendr-tun processes (none published in " + dir + ")\n";
  }
  std::string out;
  char line[1024];
  for (const auto& r : replies) {
    if (!r.error.empty()) {
      out += "tun      " + r.source.socket + ": did not answer: " + r.error + "\n";
      continue;
    }
    const std::string_view doc = r.doc;
    const auto flows_at = doc.find("\"flows\":[");
    const std::string_view head = doc.substr(0, flows_at);
    const auto flows = flows_at == std::string_view::npos
                           ? std::vector<std::string_view>{}
                           : pieces(doc.substr(flows_at), "{\"proto\":");
    std::snprintf(line, sizeof line, "tun      pid %s %s: %zu flow(s) (%s)\n",
                  rendr::json_scalar(head, "pid").c_str(), rendr::json_scalar(head, "role").c_str(),
                  flows.size(), r.source.socket.c_str());
    out += line;
    out += members_line("counters", flat_members(head, "counters"));
    out += members_line("tun", flat_members(head, "tun"));
    out += members_line("listener", flat_members(head, "listener"));
    const std::string role = rendr::json_scalar(head, "role");
    for (const auto flow : flows) {
      const auto engine_at = flow.find("\"engine\":{");
      const std::string_view app = flow.substr(0, engine_at);
      std::snprintf(line, sizeof line, "  %s %s %s -> %s %s up %s down %s", role.c_str(),
                    rendr::json_scalar(app, "proto").c_str(),
                    rendr::json_scalar(app, "src").c_str(), rendr::json_scalar(app, "dst").c_str(),
                    rendr::json_scalar(app, "state").c_str(),
                    human_bytes(rendr::json_scalar(app, "bytes_up")).c_str(),
                    human_bytes(rendr::json_scalar(app, "bytes_down")).c_str());
      out += line;
      if (engine_at == std::string_view::npos) {
        out += " (no engine flow yet)\n";
        continue;
      }
      const std::string_view eng = flow.substr(engine_at);
      const auto paths_at = eng.find("\"paths\":");
      const std::string_view ehead = eng.substr(0, paths_at);
      std::snprintf(line, sizeof line, "\n    flow %s %s active=%s migrations=%s",
                    rendr::json_scalar(ehead, "flow_id").c_str(),
                    rendr::json_scalar(ehead, "state").c_str(),
                    rendr::json_scalar(ehead, "active_path").c_str(),
                    rendr::json_scalar(ehead, "migration_count").c_str());
      out += line;
      if (const auto refusal = rendr::json_scalar(ehead, "peer_refusal"); !refusal.empty()) {
        out += " refused=" + refusal;
      }
      out += "\n";
      out += path_lines(eng, "      ");
    }
  }
  return out;
}

}  // namespace rendrctl
