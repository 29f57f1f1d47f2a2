// SPDX-License-Identifier: Apache-2.0
// rendrctl — rendr's operator CLI. Argument parsing and calls into the libraries, nothing else.
//
//   rendrctl status [--json]                         capabilities of this host and the method
//   rendrctl snapshot take --pid PID --flow L->R -o FILE [--keep-frozen]
//   rendrctl snapshot show FILE [--full]             JSON dump of a snapshot file
//   rendrctl snapshot restore FILE [--netns PATH] --exec CMD [ARGS...]
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

#include <rendr/engine/stats_json.hpp>
#include <vector>

using namespace rendr;

namespace {

constexpr const char* kUsage =
    "usage: rendrctl <command> [options]\n"
    "\n"
    "commands:\n"
    "  status [--json] [--engine-dir DIR]\n"
    "      Probe what this host can do (TCP_REPAIR, BPF, TUN, netns) and say which migration\n"
    "      method rendr will use and why; list the engine flows and paths (RTT, loss, state,\n"
    "      bytes) that live processes published in DIR (default $RENDR_ENGINE_STATUS_DIR or\n"
    "      /run/rendr/engine).\n"
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

struct Probe {
  std::string name;
  bool ok = false;
  std::string detail;
};

Probe probe_netns() {
  Probe p{"netns", false, ""};
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) == 0) {
      p.ok = true;
    } else {
      p.detail = std::strerror(errno);
    }
  });
  t.join();
  return p;
}

Probe probe_repair() {
  auto r = repair::probe_tcp_repair();
  return {"tcp_repair", r.ok(), r.ok() ? "" : r.error().message()};
}

Probe probe_bpf_type(const char* name, bpf_prog_type type, bpf_attach_type attach) {
  bpf_insn insns[2] = {};
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[1].code = BPF_JMP | BPF_EXIT;
  if (type == BPF_PROG_TYPE_SK_LOOKUP) {
    insns[0].imm = 1;  // SK_PASS
  }
  bpf_attr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.prog_type = type;
  attr.expected_attach_type = attach;
  attr.insns = reinterpret_cast<std::uint64_t>(insns);
  attr.insn_cnt = 2;
  static const char kLicense[] = "GPL";
  attr.license = reinterpret_cast<std::uint64_t>(kLicense);
  int fd = static_cast<int>(::syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr));
  if (fd < 0) {
    return {name, false, std::strerror(errno)};
  }
  ::close(fd);
  return {name, true, ""};
}

Probe probe_tun() {
  int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return {"tun", false, std::string("/dev/net/tun: ") + std::strerror(errno)};
  }
  ::close(fd);
  return {"tun", true, ""};
}

int cmd_status(const std::vector<std::string>& args) {
  bool json = false;
  std::string engine_dir = rendr::engine::engine_status_dir();
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--engine-dir" && i + 1 < args.size()) {
      engine_dir = args[++i];
    } else {
      return usage_error("status: unknown option '" + a + "'");
    }
  }
  std::vector<Probe> probes = {probe_repair(),
                               probe_bpf_type("ebpf_sched_cls", BPF_PROG_TYPE_SCHED_CLS,
                                              static_cast<bpf_attach_type>(0)),
                               probe_bpf_type("ebpf_sk_lookup", BPF_PROG_TYPE_SK_LOOKUP,
                                              BPF_SK_LOOKUP),
                               probe_tun(), probe_netns()};
  auto ok = [&](const std::string& n) {
    for (const auto& p : probes) {
      if (p.name == n) {
        return p.ok;
      }
    }
    return false;
  };
  const bool native = ok("tcp_repair") && ok("ebpf_sched_cls");
  std::string method;
  std::string why;
  if (native) {
    method = "native";
    why = "TCP_REPAIR and tc BPF programs work here: kernel sockets migrate with their state";
  } else if (ok("tun")) {
    method = "userstack";
    why = std::string("native needs ") +
          (!ok("tcp_repair") ? "TCP_REPAIR (CAP_NET_ADMIN)" : "tc BPF (CAP_BPF+CAP_NET_ADMIN)") +
          ", which failed; a TUN device is available, so connections are terminated in rendr's "
          "user-space TCP stack and carried by the engine";
  } else {
    method = "engine";
    why = "neither TCP_REPAIR nor TUN is usable: only connections whose both ends run rendr "
          "(the framing engine) can migrate";
  }
  utsname u{};
  ::uname(&u);
  if (json) {
    JsonWriter j;
    j.begin_object();
    j.kv("kernel", std::string(u.release));
    j.kv("euid", static_cast<std::int64_t>(::geteuid()));
    j.kv("method", method);
    j.kv("method_reason", why);
    j.begin_object("capabilities");
    for (const auto& p : probes) {
      j.begin_object(p.name);
      j.kv("ok", p.ok);
      j.kv("detail", p.detail);
      j.end_object();
    }
    j.end_object();
    rendrctl::engine_status_json(j, engine_dir);
    j.end_object();
    std::printf("%s\n", j.str().c_str());
    return 0;
  }
  std::printf("kernel   %s\nuid      %d\n", u.release, static_cast<int>(::geteuid()));
  for (const auto& p : probes) {
    std::printf("%-16s %s%s%s\n", p.name.c_str(), p.ok ? "yes" : "no",
                p.detail.empty() ? "" : "  - ", p.detail.c_str());
  }
  std::printf("method   %s: %s\n", method.c_str(), why.c_str());
  rendrctl::print_engine_status(engine_dir);
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
