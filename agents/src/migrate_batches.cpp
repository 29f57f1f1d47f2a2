// SPDX-License-Identifier: Apache-2.0
// rendr-agent: a selection larger than the descriptor limit allows, moved in batches (BatchRun
// in rendr/agents/source_migration.hpp cuts and sums them).
#include "agent_internal.hpp"

namespace rendr::agents {

awaitable<Message> Agent::migrate_in_batches(const std::shared_ptr<seqp::socket>& ctl,
                                             const std::string& to, const std::string& service,
                                             std::vector<std::string> keys,
                                             std::vector<std::string> ended) {
  const auto t0 = Clock::now();
  const FdRoom first = fd_room();
  progress(ctl, std::to_string(keys.size()) + " flows do not fit in one batch under RLIMIT_NOFILE " +
                    std::to_string(first.limit) + " (" + std::to_string(first.open) +
                    " open, 2 per flow): moving them in batches of at most " +
                    std::to_string(first.flows));
  std::vector<std::string> reports;
  BatchRun run(keys.size(), ended.size());
  while (run.more()) {
    // Each batch is planned from what is open now: the last one's sockets are closed by then.
    const FdRoom room = fd_room();
    const std::size_t take = run.next_take(room.flows, room.limit, room.open);
    if (take == 0) {
      break;
    }
    Message sub(MsgType::migrate);
    sub.add(Tag::to, to);
    for (std::size_t i = run.offset(); i < run.offset() + take; ++i) {
      sub.add(Tag::tuple, keys[i]);
    }
    Message r = co_await migrate(ctl, sub, true);
    if (r.type() != MsgType::json) {
      run.on_error(error_of(r, "batch").message());
      break;
    }
    std::string rep = r.str_or(Tag::text, "{}");
    BatchReport br;
    br.result = json_scalar(rep, "result");
    br.ended = u64_of(json_scalar(rep, "ended"));
    br.flows = u64_of(json_scalar(rep, "flows"));
    br.bytes_carried = u64_of(json_scalar(rep, "bytes_carried"));
    br.replayed = u64_of(json_scalar(rep, "replayed_packets"));
    br.frozen_ms = std::strtod(json_scalar(rep, "frozen_ms").c_str(), nullptr);
    br.error = json_scalar(rep, "error");
    br.failed_in = json_scalar(rep, "failed_in");
    run.on_report(br);
    reports.push_back(std::move(rep));
  }
  // A failed batch stops the rest: the batches before it stay committed, its flows and the
  // later ones stay here.
  const char* result = run.result();
  const std::string& error = run.error();
  JsonWriter j;
  j.begin_object();
  j.kv("result", result);
  j.kv("from", cfg_.name);
  j.kv("to", to);
  j.kv("service", service);
  j.kv("flows", run.moved());
  j.kv("ended", run.ended());
  j.begin_array("ended_flows");  // those found before the first batch; each batch lists its own
  for (std::size_t i = 0; i < ended.size() && i < 100; ++i) {
    j.value(ended[i]);
  }
  j.end_array();
  j.kv("frozen_ms", run.frozen_max());
  j.kv("total_ms", ms_since(t0));
  j.kv("bytes_carried", run.bytes());
  j.kv("replayed_packets", run.replayed());
  j.kv("fd_limit", first.limit);
  j.kv("batch_max_flows", static_cast<std::uint64_t>(first.flows));
  j.kv("batches_committed", run.committed());
  j.kv("batches_run", static_cast<std::uint64_t>(reports.size()));
  j.kv("not_moved", run.not_moved());  // they stay here
  j.kv("failed_in", run.failed_in());
  if (!error.empty()) {
    j.kv("error", error);
  }
  j.begin_array("batches");
  for (const auto& r : reports) {
    j.raw({}, r);
  }
  j.end_array();
  j.end_object();
  log_.info(std::to_string(keys.size()) + " flows to " + to + " in " +
            std::to_string(reports.size()) + " batch(es): " + result);
  co_return Message(MsgType::json).add(Tag::text, j.str());
}

}  // namespace rendr::agents
