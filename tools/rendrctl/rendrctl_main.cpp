// SPDX-License-Identifier: Apache-2.0
// rendrctl — rendr's operator CLI. Argument parsing and calls into the libraries, nothing else.
//
//   rendrctl status [--json]                         capabilities of this host and the method
//   rendrctl snapshot take --pid PID --flow L->R -o FILE [--keep-frozen]
//   rendrctl snapshot show FILE [--full]             JSON dump of a snapshot file
//   rendrctl snapshot restore FILE [--netns PATH] --exec CMD [ARGS...]
#include <rendr/agents/capabilities.hpp>
#include <rendr/common/json.hpp>
#include <rendr/common/snapshot_codec.hpp>
#include <rendr/repair/handover.hpp>
#include <rendr/repair/repair.hpp>

#include <fcntl.h>
#include <linux/bpf.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "agent_cmds.hpp"
#include "cert.hpp"
#include "engine_status.hpp"
#include "tun_status_reader.hpp"

#include <rendr/engine/stats_json.hpp>
#include <vector>

using namespace rendr;

namespace {

constexpr const char* kUsage =
    "usage: rendrctl <command> [options]\n"
    "\n"
    "commands:\n"
    "  status [--json] [--engine-dir DIR] [--tun-device NAME] [--tun-clone PATH]\n"
    "         [--tun-status SOCK]... [--tun-timeout-ms N]\n"
    "      Probe what this host can do (TCP_REPAIR, BPF, TUN, netns) and say which migration\n"
    "      method rendr will use and why (each failed probe with a reason code: EPERM,\n"
    "      node_denied, not_owner, busy, no_device, ...; the TUN clone node is\n"
    "      /dev/net/tun unless --tun-clone names another); list the engine flows and paths\n"
    "      (RTT, loss, state, bytes) that live processes published in DIR (default\n"
    "      $RENDR_ENGINE_STATUS_DIR or /run/rendr/engine), and the ingress and egress flows\n"
    "      of every rendr-tun that serves its status in DIR (DIR/tun-<pid>.sock) or on a\n"
    "      --tun-status SOCK (its --status-socket): app flow identity, engine flow id, paths,\n"
    "      bytes, state, counters. Each rendr-tun has N ms to answer (default 1000, all at\n"
    "      once); one that does not is listed with the reason (stale socket, hung process).\n"
    "  snapshot take --pid PID --flow LOCAL->REMOTE -o FILE [--keep-frozen]\n"
    "      Take the TCP socket LOCAL->REMOTE (e.g. 10.99.0.1:80->10.0.1.2:51000) out of process\n"
    "      PID and checkpoint it into FILE. FREEZE THE FLOW'S TRAFFIC FIRST. By default the\n"
    "      socket is thawed afterwards and keeps serving in PID (a dry run); with --keep-frozen\n"
    "      it stays frozen (silent) so the connection can be restored elsewhere.\n"
    "  snapshot show FILE [--full]\n"
    "      Decode FILE and print it as JSON (--full: whole queues in hex).\n"
    "  snapshot restore FILE [--netns PATH] --exec CMD [ARGS...]\n"
    "      Restore the socket (inside netns PATH, e.g. /run/netns/hostB) and run CMD with it as\n"
    "      fd 3 (LISTEN_FDS=1, like systemd socket activation).\n"
    ;
constexpr const char* kUsageTail = "\nExit status: 0 ok, 1 operation failed, 2 usage error.\n";

void print_usage(FILE* out) {
  std::fputs(kUsage, out);
  std::fputs(rendrctl::kAgentUsage, out);
  std::fputs(kUsageTail, out);
}

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "rendrctl: %s\n\n", msg.c_str());
  print_usage(stderr);
  return 2;
}

int failed(const std::string& msg) {
  std::fprintf(stderr, "rendrctl: error: %s\n", msg.c_str());
  return 1;
}

int cmd_status(const std::vector<std::string>& args) {
  bool json = false;
  std::string engine_dir = rendr::engine::engine_status_dir();
  rendr::agents::ProbeOptions probe_opts;
  std::vector<std::string> tun_sockets;
  int tun_timeout_ms = 1000;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--engine-dir" && i + 1 < args.size()) {
      engine_dir = args[++i];
    } else if (a == "--tun-device" && i + 1 < args.size()) {
      probe_opts.tun_device = args[++i];
    } else if (a == "--tun-clone" && i + 1 < args.size()) {
      probe_opts.tun_clone = args[++i];
    } else if (a == "--tun-status" && i + 1 < args.size()) {
      tun_sockets.push_back(args[++i]);
    } else if (a == "--tun-timeout-ms" && i + 1 < args.size()) {
      const std::string v = args[++i];
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > 60000) {
        return usage_error("status: --tun-timeout-ms takes 1..60000, not '" + v + "'");
      }
      tun_timeout_ms = static_cast<int>(n);
    } else {
      return usage_error("status: unknown option '" + a + "'");
    }
  }
  const auto report = rendr::agents::probe_capabilities(probe_opts);
  const auto& probes = report.caps;
  const std::string& method = report.method;
  const std::string& why = report.reason;
  const std::string kernel = rendr::agents::kernel_release();
  const auto tun = rendrctl::read_tun_status(rendrctl::tun_sources(engine_dir, tun_sockets),
                                             tun_timeout_ms);
  if (json) {
    JsonWriter j;
    j.begin_object();
    j.kv("kernel", kernel);
    j.kv("euid", static_cast<std::int64_t>(::geteuid()));
    j.kv("method", method);
    j.kv("method_reason", why);
    j.begin_object("capabilities");
    for (const auto& p : probes) {
      j.begin_object(p.name);
      j.kv("ok", p.ok);
      j.kv("detail", p.detail);
      j.kv("reason", p.reason);
      j.end_object();
    }
    j.end_object();
    rendrctl::engine_status_json(j, engine_dir);
    rendrctl::tun_status_json(j, tun);
    j.end_object();
    std::printf("%s\n", j.str().c_str());
    return 0;
  }
  std::printf("kernel   %s\nuid      %d\n", kernel.c_str(), static_cast<int>(::geteuid()));
  for (const auto& p : probes) {
    std::printf("%-16s %s%s%s%s%s\n", p.name.c_str(), p.ok ? "yes" : "no",
                p.reason.empty() ? "" : " (", p.reason.c_str(), p.reason.empty() ? "" : ")",
                p.detail.empty() ? "" : ("  - " + p.detail).c_str());
  }
  std::printf("method   %s: %s\n", method.c_str(), why.c_str());
  rendrctl::print_engine_status(engine_dir);
  std::fputs(rendrctl::tun_status_text(tun, engine_dir).c_str(), stdout);
  return 0;
}

Result<std::vector<std::byte>> read_all(const std::string& path) {
  auto fd = UniqueFd::open(path, O_RDONLY);
  if (!fd) {
    return std::move(fd).take_error();
  }
  std::vector<std::byte> out;
  std::byte buf[65536];
  ssize_t n = 0;
  while ((n = ::read(fd->get(), buf, sizeof buf)) > 0) {
    out.insert(out.end(), buf, buf + n);
    if (out.size() > 2 * TcpSnapshot::kMaxQueueBytes + 65536) {
      return make_error(std::errc::file_too_large, path + ": too large for a snapshot");
    }
  }
  if (n < 0) {
    return errno_error("read " + path);
  }
  return out;
}

Result<FourTuple> parse_flow(const std::string& s) {
  auto arrow = s.find("->");
  if (arrow == std::string::npos) {
    return make_error(std::errc::invalid_argument,
                      "--flow '" + s + "' must look like LOCAL->REMOTE, e.g. "
                      "10.99.0.1:80->10.0.1.2:51000");
  }
  auto l = Endpoint::parse(s.substr(0, arrow));
  if (!l) {
    return std::move(l).take_error();
  }
  auto r = Endpoint::parse(s.substr(arrow + 2));
  if (!r) {
    return std::move(r).take_error();
  }
  return FourTuple{*l, *r};
}

int cmd_snapshot(const std::vector<std::string>& args) {
  if (args.empty()) {
    return usage_error("snapshot: missing subcommand (take, show, restore)");
  }
  const std::string sub = args[0];
  if (sub == "show") {
    std::string file;
    bool full = false;
    for (std::size_t i = 1; i < args.size(); ++i) {
      if (args[i] == "--full") {
        full = true;
      } else if (file.empty() && args[i][0] != '-') {
        file = args[i];
      } else {
        return usage_error("snapshot show: unexpected '" + args[i] + "'");
      }
    }
    if (file.empty()) {
      return usage_error("snapshot show: missing FILE");
    }
    auto bytes = read_all(file);
    if (!bytes) {
      return failed(bytes.error().message());
    }
    auto snap = decode_snapshot(*bytes);
    if (!snap) {
      return failed(file + ": " + snap.error().message());
    }
    std::printf("%s\n", snapshot_to_json(*snap, full).c_str());
    return 0;
  }
  if (sub == "take") {
    long pid = -1;
    std::string flow;
    std::string out;
    bool keep = false;
    for (std::size_t i = 1; i < args.size(); ++i) {
      auto val = [&](const char* name) -> std::string {
        if (i + 1 >= args.size()) {
          return {};
        }
        (void)name;
        return args[++i];
      };
      if (args[i] == "--pid") {
        std::string v = val("--pid");
        char* end = nullptr;
        pid = std::strtol(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || pid <= 0) {
          return usage_error("--pid needs a positive process id");
        }
      } else if (args[i] == "--flow") {
        flow = val("--flow");
      } else if (args[i] == "-o" || args[i] == "--output") {
        out = val("-o");
      } else if (args[i] == "--keep-frozen") {
        keep = true;
      } else {
        return usage_error("snapshot take: unexpected '" + args[i] + "'");
      }
    }
    if (pid <= 0 || flow.empty() || out.empty()) {
      return usage_error("snapshot take needs --pid, --flow and -o");
    }
    auto tuple = parse_flow(flow);
    if (!tuple) {
      return usage_error(tuple.error().message());
    }
    auto num = repair::find_socket_fd(static_cast<pid_t>(pid), *tuple);
    if (!num) {
      return failed(num.error().message());
    }
    auto fd = repair::take_fd(static_cast<pid_t>(pid), *num);
    if (!fd) {
      return failed(fd.error().message());
    }
    repair::Repairer rep;
    auto cp = rep.checkpoint(fd->get());
    if (!cp) {
      return failed(cp.error().message());
    }
    auto bytes = encode_snapshot(cp->snapshot);
    auto file = UniqueFd::open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    bool wrote = file && ::write(file->get(), bytes.data(), bytes.size()) ==
                             static_cast<ssize_t>(bytes.size());
    if (!wrote || !keep) {
      auto thawed = rep.thaw(std::move(cp->socket));
      if (!thawed) {
        return failed("could not thaw the socket again: " + thawed.error().message());
      }
      if (!wrote) {
        return failed("write " + out + ": " + std::strerror(errno) + " (socket thawed)");
      }
      std::fprintf(stderr, "rendrctl: %s: %zu bytes written; socket thawed, still served by pid %ld\n",
                   out.c_str(), bytes.size(), pid);
    } else {
      std::fprintf(stderr,
                   "rendrctl: %s: %zu bytes written; socket left frozen in pid %ld (silent until "
                   "closed)\n",
                   out.c_str(), bytes.size(), pid);
    }
    return 0;
  }
  if (sub == "restore") {
    std::string file;
    std::string netns;
    std::vector<std::string> exec;
    for (std::size_t i = 1; i < args.size(); ++i) {
      if (args[i] == "--netns" && i + 1 < args.size()) {
        netns = args[++i];
      } else if (args[i] == "--exec") {
        exec.assign(args.begin() + static_cast<long>(i) + 1, args.end());
        break;
      } else if (file.empty() && args[i][0] != '-') {
        file = args[i];
      } else {
        return usage_error("snapshot restore: unexpected '" + args[i] + "'");
      }
    }
    if (file.empty() || exec.empty()) {
      return usage_error("snapshot restore needs FILE and --exec CMD (the process that adopts "
                         "the restored socket)");
    }
    auto bytes = read_all(file);
    if (!bytes) {
      return failed(bytes.error().message());
    }
    auto snap = decode_snapshot(*bytes);
    if (!snap) {
      return failed(file + ": " + snap.error().message());
    }
    if (!netns.empty()) {
      auto nfd = UniqueFd::open(netns, O_RDONLY);
      if (!nfd) {
        return failed(nfd.error().message());
      }
      if (::setns(nfd->get(), CLONE_NEWNET) != 0) {
        return failed("setns " + netns + ": " + std::strerror(errno));
      }
    }
    repair::Repairer rep;
    auto fd = rep.restore(*snap);
    if (!fd) {
      return failed(fd.error().message());
    }
    if (::dup2(fd->get(), 3) < 0) {
      return failed(std::string("dup2: ") + std::strerror(errno));
    }
    ::setenv("LISTEN_FDS", "1", 1);
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    std::vector<char*> argv;
    for (auto& a : exec) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    return failed("exec " + exec[0] + ": " + std::strerror(errno) +
                  " (the restored socket closes now)");
  }
  return usage_error("snapshot: unknown subcommand '" + sub + "'");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    return usage_error("missing command");
  }
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    print_usage(stdout);
    return 0;
  }
  if (cmd == "status") {
    return rendrctl::wants_agent(args) ? rendrctl::cmd_agent_status(args) : cmd_status(args);
  }
  if (cmd == "cert") {
    return rendr_cert_main(argc - 1, argv + 1);
  }
  if (cmd == "flows") {
    return rendrctl::cmd_flows(args);
  }
  if (cmd == "migrate") {
    return rendrctl::cmd_migrate(args);
  }
  if (cmd == "metrics") {
    return rendrctl::cmd_metrics(args);
  }
  if (cmd == "snapshot") {
    return cmd_snapshot(args);
  }
  return usage_error("unknown command '" + cmd + "'");
}
