// SPDX-License-Identifier: Apache-2.0
// rendr-agent: a selection larger than the descriptor limit allows, moved in batches.
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
  std::size_t next = 0;
  std::uint64_t moved = 0;
  std::uint64_t ended_n = ended.size();
  std::uint64_t bytes = 0;
  std::uint64_t replayed = 0;
  std::uint64_t committed = 0;
  double frozen_max = 0;
  std::string error;
  std::string failed_in;
  while (next < keys.size()) {
    // Each batch is planned from what is open now: the last one's sockets are closed by then.
    const FdRoom room = fd_room();
    if (room.flows == 0) {
      error = "no room for a batch under RLIMIT_NOFILE " + std::to_string(room.limit) + " (" +
              std::to_string(room.open) + " open)";
      break;
    }
    const std::size_t take = std::min(room.flows, keys.size() - next);
    Message sub(MsgType::migrate);
    sub.add(Tag::to, to);
    for (std::size_t i = next; i < next + take; ++i) {
      sub.add(Tag::tuple, keys[i]);
    }
    next += take;
    Message r = co_await migrate(ctl, sub, true);
    if (r.type() != MsgType::json) {
      error = error_of(r, "batch").message();
      break;
    }
    std::string rep = r.str_or(Tag::text, "{}");
    ended_n += u64_of(json_scalar(rep, "ended"));
    const std::string res = json_scalar(rep, "result");
    if (res == "aborted") {
      error = json_scalar(rep, "error");
      failed_in = json_scalar(rep, "failed_in");
      reports.push_back(std::move(rep));
      break;
    }
    if (res == "committed") {
      ++committed;
      moved += u64_of(json_scalar(rep, "flows"));
      bytes += u64_of(json_scalar(rep, "bytes_carried"));
      replayed += u64_of(json_scalar(rep, "replayed_packets"));
      frozen_max = std::max(frozen_max, std::strtod(json_scalar(rep, "frozen_ms").c_str(), nullptr));
    }
    reports.push_back(std::move(rep));
  }
  // A failed batch stops the rest: the batches before it stay committed, its flows and the
  // later ones stay here.
  const char* result = !error.empty() ? (committed == 0 ? "aborted" : "partial")
                       : committed == 0 ? "empty"
                                        : "committed";
  JsonWriter j;
  j.begin_object();
  j.kv("result", result);
  j.kv("from", cfg_.name);
  j.kv("to", to);
  j.kv("service", service);
  j.kv("flows", moved);
  j.kv("ended", ended_n);
  j.begin_array("ended_flows");  // those found before the first batch; each batch lists its own
  for (std::size_t i = 0; i < ended.size() && i < 100; ++i) {
    j.value(ended[i]);
  }
  j.end_array();
  j.kv("frozen_ms", frozen_max);
  j.kv("total_ms", ms_since(t0));
  j.kv("bytes_carried", bytes);
  j.kv("replayed_packets", replayed);
  j.kv("fd_limit", first.limit);
  j.kv("batch_max_flows", static_cast<std::uint64_t>(first.flows));
  j.kv("batches_committed", committed);
  j.kv("batches_run", static_cast<std::uint64_t>(reports.size()));
  const std::uint64_t gone = moved + (ended_n - ended.size());  // ended inside the batches
  j.kv("not_moved", keys.size() > gone ? keys.size() - gone : 0);  // they stay here
  j.kv("failed_in", failed_in);
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
