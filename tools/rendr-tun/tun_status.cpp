// SPDX-License-Identifier: Apache-2.0
#include "tun_status.hpp"

#include "tun_status_dir.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/json.hpp>
#include <rendr/engine/stats_json.hpp>

#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace rendr::tun {

namespace {

const char* proto_name(std::uint8_t p) {
  switch (p) {
    case 6: return "tcp";
    case 17: return "udp";
    case 1: return "icmp";
    case 58: return "icmpv6";
    default: return "other";
  }
}

std::string addr_port(std::uint8_t family, const std::array<std::uint8_t, 16>& a,
                      std::uint16_t port) {
  Endpoint e;
  e.family = family == 4 ? IpFamily::v4 : IpFamily::v6;
  e.addr = a;
  e.port = port;
  return e.to_string();
}

// remove_stale_sockets unlinks the tun-<pid>.sock files in |dir| nobody listens on any more
// (a rendr-tun that was killed cannot remove its own). Refused connects, not pids, decide:
// a pid may belong to another pid namespace.
void remove_stale_sockets(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return;
  }
  while (const dirent* e = ::readdir(d)) {
    if (!published_pid(e->d_name)) {
      continue;
    }
    const std::string path = dir + "/" + e->d_name;
    auto fd = UniqueFd::connect_unix(path, SOCK_STREAM | SOCK_NONBLOCK);
    if (!fd && fd.error().code.value() == ECONNREFUSED) {
      ::unlink(path.c_str());
    }
  }
  ::closedir(d);
}

}  // namespace

TunStatus::~TunStatus() {
  for (auto& l : listeners_) {
    ::shutdown(l->fd.get(), SHUT_RDWR);  // wakes accept()
    if (l->thread.joinable()) {
      l->thread.join();
    }
    ::unlink(l->path.c_str());
  }
}

std::shared_ptr<FlowEntry> TunStatus::add(const engine::L3Identity& id) {
  auto e = std::make_shared<FlowEntry>();
  e->id = id;
  std::lock_guard lk(mu_);
  flows_.emplace(e.get(), e);
  counters_["flows"] += 1;
  return e;
}

void TunStatus::remove(const std::shared_ptr<FlowEntry>& e) {
  std::lock_guard lk(mu_);
  e->conn = nullptr;
  flows_.erase(e.get());
}

void TunStatus::set_conn(const std::shared_ptr<FlowEntry>& e, Admin* c) {
  std::lock_guard lk(mu_);
  e->conn = c;
}

void TunStatus::count(const std::string& name, std::uint64_t n) {
  std::lock_guard lk(mu_);
  counters_[name] += n;
}

std::uint64_t TunStatus::counter(const std::string& name) const {
  std::lock_guard lk(mu_);
  const auto it = counters_.find(name);
  return it == counters_.end() ? 0 : it->second;
}

std::string TunStatus::json() const {
  std::lock_guard lk(mu_);
  JsonWriter w;
  w.begin_object();
  w.kv("role", role_);
  w.kv("pid", static_cast<std::int64_t>(::getpid()));
  w.kv("active_flows", static_cast<std::uint64_t>(flows_.size()));
  w.begin_object("counters");
  for (const auto& [k, v] : counters_) {
    w.kv(k, v);
  }
  w.end_object();
  if (extra_) {
    extra_(w);
  }
  w.begin_array("flows");
  for (const auto& [p, e] : flows_) {
    w.begin_object();
    w.kv("proto", proto_name(e->id.proto));
    w.kv("src", addr_port(e->id.family, e->id.src, e->id.src_port));
    w.kv("dst", addr_port(e->id.family, e->id.dst, e->id.dst_port));
    w.kv("state", e->state.load());
    w.kv("bytes_up", e->bytes_up.load());
    w.kv("bytes_down", e->bytes_down.load());
    if (e->conn != nullptr) {
      engine::write_flow_stats(w, e->conn->stats(), "engine");
    }
    w.end_object();
  }
  w.end_array();
  w.end_object();
  return w.str();
}

void TunStatus::serve_loop(int lfd) const {
  for (;;) {
    UniqueFd c(::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) {
      if (errno == EINTR || errno == ECONNABORTED) {
        continue;
      }
      return;  // shut down
    }
    // A reader that never reads must not stall the status thread for the next one.
    const timeval tv{1, 0};
    ::setsockopt(c.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const std::string doc = json() + "\n";
    std::size_t off = 0;
    while (off < doc.size()) {
      const ssize_t n = ::send(c.get(), doc.data() + off, doc.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        break;
      }
      off += static_cast<std::size_t>(n);
    }
  }
}

Status TunStatus::serve(const std::string& path) {
  auto fd = UniqueFd::listen_unix(path, SOCK_STREAM, 16);
  if (!fd) {
    return std::move(fd).take_error().with_context("status socket");
  }
  auto l = std::make_unique<Listener>();
  l->fd = std::move(*fd);
  l->path = path;
  const int lfd = l->fd.get();
  l->thread = std::thread([this, lfd] { serve_loop(lfd); });
  listeners_.push_back(std::move(l));
  return {};
}

Status TunStatus::publish(const std::string& dir) {
  if (const auto slash = dir.rfind('/'); slash != std::string::npos && slash > 0) {
    ::mkdir(dir.substr(0, slash).c_str(), 0755);
  }
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return errno_error("status dir: mkdir " + dir);
  }
  remove_stale_sockets(dir);
  return serve(published_socket(dir, ::getpid()));
}

}  // namespace rendr::tun
