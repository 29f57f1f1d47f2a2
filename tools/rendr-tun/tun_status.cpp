// SPDX-License-Identifier: Apache-2.0
#include "tun_status.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/json.hpp>
#include <rendr/engine/stats_json.hpp>

#include <sys/socket.h>
#include <sys/un.h>
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

}  // namespace

TunStatus::~TunStatus() {
  if (listen_fd_) {
    ::shutdown(listen_fd_.get(), SHUT_RDWR);  // wakes accept()
  }
  if (thread_.joinable()) {
    thread_.join();
  }
  if (!path_.empty()) {
    ::unlink(path_.c_str());
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

Status TunStatus::serve(const std::string& path) {
  sockaddr_un sa{};
  if (path.size() >= sizeof sa.sun_path) {
    return make_error(std::errc::filename_too_long, "status socket " + path);
  }
  auto fd = UniqueFd::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (!fd) {
    return std::move(fd).take_error();
  }
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());
  if (::bind(fd->get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(fd->get(), 16) != 0) {
    return errno_error("status socket " + path);
  }
  listen_fd_ = std::move(*fd);
  path_ = path;
  thread_ = std::thread([this] {
    for (;;) {
      UniqueFd c(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) {
        if (errno == EINTR || errno == ECONNABORTED) {
          continue;
        }
        return;  // shut down
      }
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
  });
  return {};
}

}  // namespace rendr::tun
