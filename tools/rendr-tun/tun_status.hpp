// SPDX-License-Identifier: Apache-2.0
// tun_status: the live flows and counters of one rendr-tun process (docs/tun-ingress.md
// "Status"), rendered as JSON and served on Unix sockets (`--status-socket PATH`, and
// <status dir>/tun-<pid>.sock where `rendrctl status` finds it: tun_status_dir.hpp; each
// connection gets one JSON document, then EOF). Thread-safe: relay threads register their
// flows and count events; the status threads read.
#pragma once

#include <rendr/common/json.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/engine/conn.hpp>
#include <rendr/engine/types.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace rendr::tun {

// FlowEntry: one application flow while it is relayed. |conn| (guarded by the TunStatus lock:
// set it with TunStatus::set_conn) is the engine flow while it may be read.
struct FlowEntry {
  engine::L3Identity id;
  Admin* conn = nullptr;  // a Conn (tcp) or a PacketConn (udp)
  std::atomic<std::uint64_t> bytes_up{0};    // app -> origin
  std::atomic<std::uint64_t> bytes_down{0};  // origin -> app
  std::atomic<const char*> state{"dialing"};
};

class TunStatus {
 public:
  explicit TunStatus(std::string role) : role_(std::move(role)) {}
  ~TunStatus();
  TunStatus(const TunStatus&) = delete;
  TunStatus& operator=(const TunStatus&) = delete;

  // add registers a flow; the returned entry lives until remove(entry).
  std::shared_ptr<FlowEntry> add(const engine::L3Identity& id);
  void remove(const std::shared_ptr<FlowEntry>& e);
  // set_conn publishes (or, with nullptr, withdraws) the entry's engine flow; after a withdraw
  // returns no status reader uses the Conn any more.
  void set_conn(const std::shared_ptr<FlowEntry>& e, Admin* c);
  // count adds one to counter |name| ("flows", "refused_flow_denied", ...).
  void count(const std::string& name, std::uint64_t n = 1);
  [[nodiscard]] std::uint64_t counter(const std::string& name) const;
  // json: {"role","pid","active_flows","counters":{...},"flows":[{"src","dst","proto","state","bytes_up",
  // "bytes_down","engine":{flow stats: flow_id, paths, ...}}]}.
  [[nodiscard]] std::string json() const;
  // set_extra: |f| adds role-specific members to json() (the ingress: the TUN's counters).
  void set_extra(std::function<void(JsonWriter&)> f) {
    std::lock_guard lk(mu_);
    extra_ = std::move(f);
  }
  // serve listens on the Unix socket |path| (replacing a stale file) on its own thread; it
  // may be called again for another path. The files are removed when this object goes.
  // Errors: errno of socket/bind/listen.
  [[nodiscard]] Status serve(const std::string& path);
  // publish serves on <dir>/tun-<pid>.sock (tun_status_dir.hpp), creating |dir| (and its
  // parent) 0755 when missing. Errors: errno of mkdir or serve.
  [[nodiscard]] Status publish(const std::string& dir);

 private:
  struct Listener {
    UniqueFd fd;
    std::string path;
    std::thread thread;
  };
  void serve_loop(int fd) const;

  std::string role_;
  mutable std::mutex mu_;
  std::map<FlowEntry*, std::shared_ptr<FlowEntry>> flows_;
  std::map<std::string, std::uint64_t> counters_;
  std::function<void(JsonWriter&)> extra_;
  std::vector<std::unique_ptr<Listener>> listeners_;
};

}  // namespace rendr::tun
