// SPDX-License-Identifier: Apache-2.0
// rendr-agent: status and flows JSON, Prometheus metrics.
#include "agent_internal.hpp"

namespace rendr::agents {

// ---------------------------------------------------------------------------------------------
// status

std::string Agent::status_json() {
  (void)reap_closed_flows();
  JsonWriter j;
  j.begin_object();
  j.kv("agent", cfg_.name);
  j.kv("kernel", kernel_release());
  j.kv("role", steerer_ ? "gateway" : "host");
  j.begin_object("capabilities");
  j.kv("tcp_repair", tcp_repair_ok_);
  j.kv("ebpf", freezer_ != nullptr || steerer_ != nullptr);
  j.end_object();
  // What the shared probe (rendrctl status, the tests) found at start, by trying.
  j.begin_object("probed");
  for (const auto& c : probed_.caps) {
    j.begin_object(c.name);
    j.kv("ok", c.ok);
    j.kv("detail", c.detail);
    j.kv("reason", c.reason);
    j.end_object();
  }
  j.end_object();
  j.kv("method", method_);
  j.kv("reason", method_reason_);
  j.begin_array("peers");
  for (const auto& [name, addr] : cfg_.peers) {
    j.begin_object();
    j.kv("name", name);
    j.kv("address", addr);
    j.kv("gateway", name == cfg_.gateway);
    j.end_object();
  }
  j.end_array();
  j.begin_array("services");
  for (const auto& [id, s] : sessions_) {
    j.begin_object();
    j.kv("service", s->service);
    j.kv("session", id);
    j.kv("connections", static_cast<std::uint64_t>(s->conns.size()));
    j.end_object();
  }
  j.end_array();
  j.kv("flows", static_cast<std::uint64_t>(flows_.size()));
  j.kv("staged_migrations", static_cast<std::uint64_t>(staged_.size()));
  // Flows the eBPF freeze holds on this host (migrating, staged, or in their freeze grace).
  if (freezer_) {
    auto n = freezer_->frozen_count();
    j.kv("frozen_flows", static_cast<std::uint64_t>(n ? *n : 0));
  }
  std::uint64_t held = 0;
  for (const auto& [s, q] : orphans_) {
    held += q.size();
  }
  j.kv("held_connections", held);
  us_status(j);
  j.begin_object("migrations");
  j.kv("committed", metrics_.migrations_committed);
  j.kv("aborted", metrics_.migrations_aborted);
  j.kv("indeterminate", metrics_.migrations_indeterminate);
  j.kv("flows_out", metrics_.flows_migrated_out);
  j.kv("flows_adopted", metrics_.flows_adopted);
  j.kv("last_frozen_ms", metrics_.frozen_ms_last);
  j.end_object();
  // Moves an earlier run of this agent froze and died on, finished by this run (reclaim.hpp).
  j.begin_object("reclaims");
  j.kv("started", metrics_.reclaims);
  j.kv("in_progress", static_cast<std::uint64_t>(reclaiming_.size()));
  j.kv("returned", metrics_.reclaims_returned);
  j.kv("released", metrics_.reclaims_released);
  j.kv("held", metrics_.reclaims_held);
  j.end_object();
  if (steerer_) {
    auto c = steerer_->counters();
    auto fl = steerer_->flows();
    j.begin_object("steering");
    j.kv("flows", static_cast<std::uint64_t>(fl ? fl->size() : 0));
    if (c) {
      j.kv("table", c->table);
      j.kv("pinned", c->pinned);
      j.kv("no_backend", c->no_backend);
    }
    j.end_object();
  }
  j.end_object();
  return j.str();
}

std::string Agent::flows_json() {
  (void)reap_closed_flows();
  JsonWriter j;
  j.begin_object();
  j.kv("agent", cfg_.name);
  j.begin_array("flows");
  for (const auto& [k, f] : flows_) {
    j.begin_object();
    j.kv("tuple", k);
    j.kv("service", f.service);
    j.kv("conn_id", f.conn_id);
    j.kv("state", f.migrating ? "migrating" : "serving");
    j.kv("method", f.userstack ? "userstack" : "native");
    j.end_object();
  }
  for (const auto& [k, t] : grace_) {
    j.begin_object();
    j.kv("tuple", k);
    j.kv("state", "left (freeze grace)");
    if (freezer_) {
      if (auto fl = FourTuple::parse(k); fl) {
        if (auto c = freezer_->counters(*fl); c) {
          j.kv("dropped_in", c->ingress_packets);
          j.kv("dropped_out", c->egress_packets);
        }
      }
    }
    j.end_object();
  }
  j.end_array();
  j.end_object();
  return j.str();
}

std::string Agent::metrics_text() {
  std::string o;
  auto line = [&o, this](const std::string& name, const std::string& help, const char* type,
                         const std::string& labels, double v) {
    o += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    o += name + "{agent=\"" + cfg_.name + "\"" + labels + "} " + buf + "\n";
  };
  line("rendr_migrations_total", "Migrations that left this agent, by result.", "counter",
       ",result=\"committed\"", static_cast<double>(metrics_.migrations_committed));
  o += "rendr_migrations_total{agent=\"" + cfg_.name + "\",result=\"aborted\"} " +
       std::to_string(metrics_.migrations_aborted) + "\n";
  line("rendr_migrations_indeterminate_total",
       "Migrations committed by presumption (target unreachable after COMMIT).", "counter", "",
       static_cast<double>(metrics_.migrations_indeterminate));
  line("rendr_flows_migrated_out_total", "Connections moved away from this host.", "counter", "",
       static_cast<double>(metrics_.flows_migrated_out));
  line("rendr_flows_adopted_total", "Connections restored and adopted on this host.", "counter",
       "", static_cast<double>(metrics_.flows_adopted));
  line("rendr_reclaims_total",
       "Frozen connections of an earlier run of this agent finished by this run, by outcome.",
       "counter", ",outcome=\"returned\"", static_cast<double>(metrics_.reclaims_returned));
  o += "rendr_reclaims_total{agent=\"" + cfg_.name + "\",outcome=\"released\"} " +
       std::to_string(metrics_.reclaims_released) + "\n";
  o += "rendr_reclaims_total{agent=\"" + cfg_.name + "\",outcome=\"held\"} " +
       std::to_string(metrics_.reclaims_held) + "\n";
  line("rendr_restore_failures_total", "Restores that failed here.", "counter", "",
       static_cast<double>(metrics_.restores_failed));
  line("rendr_offers_rejected_total", "Migration offers rejected here.", "counter", "",
       static_cast<double>(metrics_.offers_rejected));
  line("rendr_peer_channels_refused_total", "Agent channels refused (TLS/identity).", "counter",
       "", static_cast<double>(metrics_.peers_refused));
  line("rendr_peer_channels_opened_total",
       "Agent channels this agent dialled (TLS handshakes; idle channels are reused).", "counter",
       "", static_cast<double>(metrics_.peer_channels_opened));
  line("rendr_peer_requests_refused_total",
       "Requests a configured agent's role does not allow (docs/security.md).", "counter", "",
       static_cast<double>(metrics_.peer_requests_refused));
  line("rendr_agent_method", "The migration method in use (1 for the method label).", "gauge",
       ",method=\"" + method_ + "\"", 1);
  if (method_ == "userstack") {
    line("rendr_userstack_flows", "Connections served through this agent's userstack.", "gauge",
         "", static_cast<double>(us_tuples_.size()));
    line("rendr_userstack_accepted_total", "userstack connections handed to a server.",
         "counter", "", static_cast<double>(metrics_.us_accepted));
    line("rendr_userstack_refused_total", "userstack connections reset (no service/server).",
         "counter", "", static_cast<double>(metrics_.us_refused));
  }
  line("rendr_migration_frozen_seconds_sum", "Sum of freeze-to-commit durations.", "counter", "",
       metrics_.frozen_ms_sum / 1000.0);
  line("rendr_migration_frozen_seconds_max", "Longest freeze-to-commit duration.", "gauge", "",
       metrics_.frozen_ms_max / 1000.0);
  line("rendr_flows_tracked", "Connections tracked for migration.", "gauge", "",
       static_cast<double>(flows_.size()));
  line("rendr_migration_flows_ended_total",
       "Flows dropped from a batch because they ended before they could move.", "counter", "",
       static_cast<double>(metrics_.flows_ended));
  if (steerer_) {
    line("rendr_steer_entries", "Gateway flow table entries at the last sweep.", "gauge", "",
         static_cast<double>(metrics_.steer_entries));
    line("rendr_steer_entries_removed_total",
         "Gateway flow table entries of ended flows removed by the sweep.", "counter", "",
         static_cast<double>(metrics_.steer_entries_removed));
  }
  line("rendr_flows_reaped_total",
       "Tracked flows forgotten because their server or socket was gone.", "counter", "",
       static_cast<double>(metrics_.flows_reaped));
  o += "# HELP rendr_flow_freeze_dropped_packets Packets dropped by the freeze per flow.\n"
       "# TYPE rendr_flow_freeze_dropped_packets gauge\n";
  if (freezer_) {
    for (const auto& [k, t] : grace_) {
      if (auto fl = FourTuple::parse(k); fl) {
        if (auto c = freezer_->counters(*fl); c) {
          o += "rendr_flow_freeze_dropped_packets{agent=\"" + cfg_.name + "\",flow=\"" + k +
               "\"} " + std::to_string(c->ingress_packets + c->egress_packets) + "\n";
        }
      }
    }
  }
  return o;
}

}  // namespace rendr::agents
