// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/stats_json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace rendr::engine {

std::string id_hex(const Id128& id) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  s.reserve(32);
  for (auto b : id) {
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

void write_flow_stats(JsonWriter& w, const FlowStats& s, std::string_view key) {
  const auto us = [](Duration d) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  };
  w.begin_object(key);
  w.kv("flow_id", id_hex(s.flow_id));
  w.kv("side", s.side == Side::client ? "client" : "server");
  w.kv("state", to_string(s.state));
  w.kv("mode", to_string(s.mode));
  w.kv("packet", (s.peer_caps & kCapsPacketMode) != 0);
  w.kv("active_path", static_cast<std::uint64_t>(s.active_path));
  w.kv("migration_count", s.migration_count);
  w.kv("recv_dups", s.recv_dups);
  w.kv("recv_queue_hwm", static_cast<std::uint64_t>(s.recv_queue_hwm));
  w.kv("bond_stuck_skips", s.bond_stuck_skips);
  w.kv("retransmits", s.retransmits);
  w.kv("replayed_frames", s.replayed_frames);
  w.kv("ledger_frames", static_cast<std::uint64_t>(s.ledger_frames));
  w.kv("ledger_bytes", static_cast<std::uint64_t>(s.ledger_bytes));
  w.kv("delivered_unread", static_cast<std::uint64_t>(s.delivered_unread));
  w.kv("recv_chunk_bytes", static_cast<std::uint64_t>(s.recv_chunk_bytes));
  w.kv("backpressure_events", s.backpressure_events);
  w.kv("paths_lost", s.paths_lost);
  w.kv("path_redials", s.path_redials);
  w.kv("paths_later", s.paths_later);
  w.kv("direct_rx_bytes", s.direct_rx_bytes);
  w.kv("direct_handovers", s.direct_handovers);
  w.kv("direct_reclaims", s.direct_reclaims);
  w.kv("last_path_down", s.last_path_down);
  w.kv("write_shut", s.write_shut);
  w.kv("peer_write_shut", s.peer_write_shut);
  // Timer lateness and the silence reprieves (docs/engine.md "Timer lateness").
  w.kv("timer_fired", s.timer_fired);
  w.kv("timer_late_max_us", us(s.timer_late_max));
  std::string hist = "[";
  for (std::size_t i = 0; i < s.timer_late_hist.size(); ++i) {
    hist += (i == 0 ? "" : ",") + std::to_string(s.timer_late_hist[i]);
  }
  w.raw("timer_late_hist", hist + "]");
  w.kv("handler_max_us", us(s.handler_max));
  w.kv("io_lock_wait_max_us", us(s.io_lock_wait_max));
  w.kv("timer_armed_late", s.timer_armed_late);
  w.kv("timer_armed_late_max_us", us(s.timer_armed_late_max));
  // By kind, the kinds that occurred: {"rto": [count, max_us], ...}.
  w.begin_object("timer_armed_late_by_kind");
  for (std::size_t k = 0; k < s.timer_armed_late_by_kind.size(); ++k) {
    if (s.timer_armed_late_by_kind[k] > 0) {
      w.raw(to_string(static_cast<DeadlineKind>(k)),
            "[" + std::to_string(s.timer_armed_late_by_kind[k]) + "," +
                std::to_string(us(s.timer_armed_late_max_by_kind[k])) + "]");
    }
  }
  w.end_object();
  w.kv("silence_pending_reprieves", s.silence_pending_reprieves);
  w.kv("transport_silence_deaths", s.transport_silence_deaths);
  w.kv("silence_starved_reprieves", s.silence_starved_reprieves);
  if (s.l3_identity) {
    w.kv("l3_identity", to_string(*s.l3_identity));
  }
  if (s.peer_refusal) {
    w.kv("peer_refusal", to_string(s.peer_refusal->code));
    w.kv("peer_refusal_detail", s.peer_refusal->detail);
  }
  w.begin_array("paths");
  for (const auto& p : s.paths) {
    w.begin_object();
    w.kv("id", static_cast<std::uint64_t>(p.id));
    w.kv("name", p.name);
    w.kv("transport", p.transport);
    w.kv("local", p.local);
    w.kv("remote", p.remote);
    w.kv("state", to_string(p.state));
    w.kv("active", p.active);
    if (p.has_rtt) {
      w.kv("rtt_us", us(p.srtt));
      w.kv("jitter_us", us(p.jitter));
    } else {
      w.kv_null("rtt_us");
      w.kv_null("jitter_us");
    }
    if (p.clean_rtt) {
      w.kv("clean_rtt_us", us(*p.clean_rtt));
    } else {
      w.kv_null("clean_rtt_us");
    }
    w.kv("loss_ppt", static_cast<std::uint64_t>(p.loss_ppt));
    w.kv("bytes_rx", p.bytes_rx);
    w.kv("bytes_tx", p.bytes_tx);
    w.kv("frames_rx", p.frames_rx);
    w.kv("frames_tx", p.frames_tx);
    w.kv("recv_dups", p.recv_dups);
    w.end_object();
  }
  w.end_array();
  w.end_object();
}

std::string flow_stats_json(const FlowStats& s) {
  JsonWriter w;
  write_flow_stats(w, s);
  return w.str();
}

std::string engine_status_dir() {
  const char* d = std::getenv("RENDR_ENGINE_STATUS_DIR");
  return d != nullptr && *d != '\0' ? std::string(d) : std::string("/run/rendr/engine");
}

Status write_engine_status(std::span<const FlowStats> flows, std::string_view process,
                           const std::string& dir) {
  // mkdir -p (two levels are enough for the default; deeper custom dirs must exist).
  const auto slash = dir.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    ::mkdir(dir.substr(0, slash).c_str(), 0755);
  }
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return errno_error("engine status: mkdir " + dir);
  }
  JsonWriter w;
  w.begin_object();
  w.kv("pid", static_cast<std::int64_t>(::getpid()));
  w.kv("process", process);
  w.kv("updated_unix_ms",
       static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count()));
  w.begin_array("flows");
  for (const auto& f : flows) {
    write_flow_stats(w, f);
  }
  w.end_array();
  w.end_object();
  const std::string path = dir + "/" + std::to_string(::getpid()) + ".json";
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) {
    return errno_error("engine status: open " + tmp);
  }
  const std::string& s = w.str();
  const bool ok = std::fwrite(s.data(), 1, s.size(), f) == s.size() && std::fputc('\n', f) != EOF;
  const int err = errno;
  std::fclose(f);
  if (!ok) {
    return errno_error("engine status: write " + tmp, err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return errno_error("engine status: rename " + path);
  }
  return {};
}

}  // namespace rendr::engine
