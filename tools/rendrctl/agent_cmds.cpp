// SPDX-License-Identifier: Apache-2.0
#include "agent_cmds.hpp"

#include <rendr/agents/message.hpp>
#include <rendr/agents/packet.hpp>
#include <rendr/common/endpoint.hpp>
#include <rendr/common/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <string_view>

using namespace rendr;
using namespace rendr::agents;

namespace rendrctl {

const char* const kAgentUsage =
    "  status --agent SOCK [--peer NAME] [--json]\n"
    "      Ask the rendr-agent at SOCK (default /run/rendr/agent.sock) for its status, or for\n"
    "      the status of peer agent NAME (over the agent channel).\n"
    "  flows [--agent SOCK] [--json]\n"
    "      Connections the agent tracks (and recently moved ones still in freeze grace).\n"
    "  migrate (--flow LOCAL->REMOTE ... | --service NAME | --all) --to AGENT [--agent SOCK]\n"
    "          [--json] [--timeout-ms N]\n"
    "      Move live connections to AGENT: freeze, checkpoint, ship, restore, steer, commit.\n"
    "      Progress goes to stderr; the report (downtime, bytes carried, result) to stdout.\n"
    "      Flows that ended meanwhile are dropped and listed; a selection too big for the\n"
    "      agent's descriptor limit moves in several batches.\n"
    "      Exit 0 when committed (or every flow had ended), 1 when aborted (the connections\n"
    "      continue here) or only some batches committed.\n"
    "  metrics [--agent SOCK]\n"
    "      Prometheus text metrics of the agent.\n"
    "  cert init --dir DIR | cert issue --dir DIR --name AGENT\n"
    "      Create the agents' CA, and a certificate per agent (see docs/certificates.md).\n";

namespace {

int usage_err(const std::string& m) {
  std::fprintf(stderr, "rendrctl: %s (see rendrctl --help)\n", m.c_str());
  return 2;
}
int fail(const std::string& m) {
  std::fprintf(stderr, "rendrctl: error: %s\n", m.c_str());
  return 1;
}

// pretty indents our agents' compact JSON for people (no reformatting of values).
std::string pretty(std::string_view j) {
  std::string out;
  int depth = 0;
  bool in_str = false;
  auto nl = [&] {
    out += '\n';
    out.append(static_cast<std::size_t>(depth) * 2, ' ');
  };
  for (std::size_t i = 0; i < j.size(); ++i) {
    char c = j[i];
    if (in_str) {
      out += c;
      if (c == '\\' && i + 1 < j.size()) {
        out += j[++i];
      } else if (c == '"') {
        in_str = false;
      }
      continue;
    }
    switch (c) {
      case '"': in_str = true; out += c; break;
      case '{': case '[':
        out += c;
        if (i + 1 < j.size() && (j[i + 1] == '}' || j[i + 1] == ']')) {
          out += j[++i];
          break;
        }
        ++depth;
        nl();
        break;
      case '}': case ']': --depth; nl(); out += c; break;
      case ',': out += c; nl(); break;
      case ':': out += ": "; break;
      default: out += c;
    }
  }
  return out;
}

struct Common {
  std::string sock = kDefaultControlSocket;
  bool json = false;
};

Result<Message> ask(const Common& c, const Message& m, int timeout_ms,
                    void (*prog)(const std::string&) = nullptr) {
  auto s = connect_control(c.sock);
  if (!s) {
    return std::move(s).take_error();
  }
  return call(s->get(), m, timeout_ms, prog);
}

void print_progress(const std::string& line) {
  std::fprintf(stderr, "rendrctl: %s\n", line.c_str());
}

}  // namespace

bool wants_agent(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--agent" || a == "--peer") {
      return true;
    }
  }
  return false;
}

int cmd_agent_status(const std::vector<std::string>& args) {
  Common c;
  std::string peer;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json") {
      c.json = true;
    } else if (args[i] == "--agent" && i + 1 < args.size()) {
      c.sock = args[++i];
    } else if (args[i] == "--peer" && i + 1 < args.size()) {
      peer = args[++i];
    } else {
      return usage_err("status: unexpected '" + args[i] + "'");
    }
  }
  Message m(MsgType::status);
  if (!peer.empty()) {
    m.add(Tag::peer, peer);
  }
  auto r = ask(c, m, 15000);
  if (!r) {
    return fail(r.error().message());
  }
  if (r->type() != MsgType::json) {
    return fail(error_of(*r, "status").message());
  }
  std::string j = r->str_or(Tag::text, "{}");
  std::printf("%s\n", c.json ? j.c_str() : pretty(j).c_str());
  return 0;
}

int cmd_flows(const std::vector<std::string>& args) {
  Common c;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json") {
      c.json = true;
    } else if (args[i] == "--agent" && i + 1 < args.size()) {
      c.sock = args[++i];
    } else {
      return usage_err("flows: unexpected '" + args[i] + "'");
    }
  }
  auto r = ask(c, Message(MsgType::flows), 15000);
  if (!r) {
    return fail(r.error().message());
  }
  if (r->type() != MsgType::json) {
    return fail(error_of(*r, "flows").message());
  }
  std::string j = r->str_or(Tag::text, "{}");
  std::printf("%s\n", c.json ? j.c_str() : pretty(j).c_str());
  return 0;
}

int cmd_metrics(const std::vector<std::string>& args) {
  Common c;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--agent" && i + 1 < args.size()) {
      c.sock = args[++i];
    } else {
      return usage_err("metrics: unexpected '" + args[i] + "'");
    }
  }
  auto r = ask(c, Message(MsgType::metrics), 15000);
  if (!r) {
    return fail(r.error().message());
  }
  if (r->type() != MsgType::text) {
    return fail(error_of(*r, "metrics").message());
  }
  std::fputs(r->str_or(Tag::text, "").c_str(), stdout);
  return 0;
}

// json_strings reads the array of strings at the first `"key":[` in |json| (our agents' flat
// reports; escapes are kept as sent, the strings we list carry none).
std::vector<std::string> json_strings(std::string_view json, std::string_view key) {
  std::vector<std::string> out;
  const std::string k = "\"" + std::string(key) + "\":[";
  auto p = json.find(k);
  if (p == std::string_view::npos) {
    return out;
  }
  p += k.size();
  while (p < json.size() && json[p] == '"') {
    std::string v;
    for (++p; p < json.size() && json[p] != '"'; ++p) {
      if (json[p] == '\\' && p + 1 < json.size()) {
        v += json[p++];
      }
      v += json[p];
    }
    out.push_back(std::move(v));
    p += 1;
    if (p < json.size() && json[p] == ',') {
      ++p;
    }
  }
  return out;
}

int cmd_migrate(const std::vector<std::string>& args) {
  Common c;
  Message m(MsgType::migrate);
  bool selected = false;
  bool have_to = false;
  int timeout_ms = 120000;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool has_v = i + 1 < args.size();
    if (a == "--json") {
      c.json = true;
    } else if (a == "--agent" && has_v) {
      c.sock = args[++i];
    } else if (a == "--flow" && has_v) {
      auto t = FourTuple::parse(args[++i]);
      if (!t) {
        return usage_err("--flow: " + t.error().message());
      }
      m.add(Tag::tuple, t->to_string());
      selected = true;
    } else if (a == "--service" && has_v) {
      m.add(Tag::service, args[++i]);
      selected = true;
    } else if (a == "--all") {
      m.add(Tag::all, "1");
      selected = true;
    } else if (a == "--to" && has_v) {
      m.add(Tag::to, args[++i]);
      have_to = true;
    } else if (a == "--timeout-ms" && has_v) {
      timeout_ms = std::atoi(args[++i].c_str());
      if (timeout_ms <= 0) {
        return usage_err("--timeout-ms expects a positive number");
      }
    } else {
      return usage_err("migrate: unexpected '" + a + "'");
    }
  }
  if (!selected) {
    return usage_err("migrate: choose flows with --flow, --service or --all");
  }
  if (!have_to) {
    return usage_err("migrate: --to AGENT is required");
  }
  auto r = ask(c, m, timeout_ms, c.json ? nullptr : print_progress);
  if (!r) {
    return fail(r.error().message());
  }
  if (r->type() != MsgType::json) {
    return fail(error_of(*r, "migrate").message());
  }
  std::string j = r->str_or(Tag::text, "{}");
  // "empty": every selected flow ended before it could move; nothing was frozen or moved.
  const bool ok = json_scalar(j, "result") == "committed" || json_scalar(j, "result") == "empty";
  if (c.json) {
    std::printf("%s\n", j.c_str());
  } else {
    std::printf("result         %s%s%s\n", json_scalar(j, "result").c_str(),
                json_scalar(j, "indeterminate") == "true" ? " (presumed: target unreachable after commit)"
                                                    : "",
                json_scalar(j, "result") == "empty" ? " (every selected flow ended before it could move)"
                                                    : "");
    std::printf("flows          %s  %s -> %s\n", json_scalar(j, "flows").c_str(),
                json_scalar(j, "from").c_str(), json_scalar(j, "to").c_str());
    std::printf("frozen         %s ms (freeze to commit)\n", json_scalar(j, "frozen_ms").c_str());
    std::printf("total          %s ms\n", json_scalar(j, "total_ms").c_str());
    std::printf("bytes carried  %s (socket queues moved with the connections)\n",
                json_scalar(j, "bytes_carried").c_str());
    if (!json_scalar(j, "batches_run").empty()) {
      std::printf("batches        %s of %s run committed (at most %s flows each under the agent's "
                  "RLIMIT_NOFILE %s); %s flow(s) not moved\n",
                  json_scalar(j, "batches_committed").c_str(), json_scalar(j, "batches_run").c_str(),
                  json_scalar(j, "batch_max_flows").c_str(), json_scalar(j, "fd_limit").c_str(),
                  json_scalar(j, "not_moved").c_str());
    }
    if (json_scalar(j, "ended") != "0" && !json_scalar(j, "ended").empty()) {
      std::printf("ended          %s (closed before they could move: not migrated, forgotten)\n",
                  json_scalar(j, "ended").c_str());
      for (const auto& e : json_strings(j, "ended_flows")) {
        std::printf("               %s\n", e.c_str());
      }
    }
    if (!ok) {
      std::printf("failed in      %s\nerror          %s\n", json_scalar(j, "failed_in").c_str(),
                  json_scalar(j, "error").c_str());
      std::printf("the connections %scontinue on %s\n",
                  json_scalar(j, "result") == "partial" ? "of the failed and later batches " : "",
                  json_scalar(j, "from").c_str());
    }
  }
  return ok ? 0 : 1;
}

}  // namespace rendrctl
