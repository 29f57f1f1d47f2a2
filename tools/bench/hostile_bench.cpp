// SPDX-License-Identifier: Apache-2.0
// rendr-bench hostile: rendr as an attacker and an unlucky operator meet it, in the gateway lab
// (named netns rbhost-*) with rendr-agent in gw, a and b. Four parts:
//   flood     --hellos HELLOs (default 10 000) from --sources other addresses of the peer
//             namespace against an engine listener in b, each carrier closed right after its
//             HELLO, while a legitimate client dials again and again from the peer's own
//             address; then the same client after the flood, and the listener's RSS after
//             --settle-s seconds;
//   authz     a certificate of the agents' CA issued to a name on no list, and configured agents
//             in the wrong role, ask for every kind of action: how many were carried out;
//   slowloris --slowloris handshakes that never finish against agent a, three rounds; a's RSS
//             afterwards and whether a configured peer still gets a channel;
//   faults    a download through the VIP while the source agent is stopped for 8 s in the
//             middle of a migration, while the serving host's agent is killed, and while the
//             source agent is killed after it froze the flow and started again: every byte
//             must arrive.
// The last stdout line (with --json) is one JSON object.
#include "bench/cli.hpp"
#include "bench/hostile_listener.hpp"
#include "bench/loopback.hpp"
#include "bench/migrate_load.hpp"
#include "bench/subcommand.hpp"
#include "lab/agent_client.hpp"
#include "lab/agent_stack.hpp"
#include "lab/gateway_lab.hpp"
#include "lab/lab_util.hpp"

#include <rendr/agents/message.hpp>
#include <rendr/common/json.hpp>
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/listener.hpp>
#include <rendr/engine/core/wire.hpp>

#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <malloc.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

namespace rendr::bench {

namespace {

constexpr const char* kListenAddr = "10.0.3.2:7000";  // host b, reached from the peer via gw

double rss_mb(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stod(line.substr(6)) / 1024.0;
    }
  }
  return -1;
}

long threads_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Threads:", 0) == 0) {
      return std::stol(line.substr(8));
    }
  }
  return -1;
}

bool alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

// ListenerCounts: the last "stats ..." line hostile-listener printed (once a second).
struct ListenerCounts {
  std::uint64_t flows = 0;
  std::uint64_t key_refused = 0;
};
ListenerCounts last_counts(const std::string& log) {
  ListenerCounts c;
  const auto at = log.rfind("stats flows=");
  if (at != std::string::npos) {
    unsigned long long f = 0;
    unsigned long long k = 0;
    if (std::sscanf(log.c_str() + at, "stats flows=%llu key_refused=%llu", &f, &k) == 2) {
      c.flows = f;
      c.key_refused = k;
    }
  }
  return c;
}

// legit_round_trip dials one flow from the peer's own address, echoes 1 KiB and closes.
bool legit_round_trip(std::string* why, bool keyed) {
  DialOptions o;
  if (keyed) {
    o.listener_key = bench_key();
  }
  PathSpec p;
  p.address = kListenAddr;
  p.local = lab::GatewayLab::kPeer4;
  o.paths.push_back(p);
  auto d = Dialer::create(o);
  if (!d) {
    *why = d.error().message();
    return false;
  }
  auto c = (*d)->dial(deadline_in(std::chrono::seconds(5)));
  if (!c) {
    *why = "dial: " + c.error().message();
    return false;
  }
  std::vector<std::byte> out(1024, std::byte{0x42});
  std::vector<std::byte> in(1024);
  const auto dl = deadline_in(std::chrono::seconds(5));
  if (auto w = (*c)->write(out, dl); !w) {
    *why = "write: " + w.error().message();
    return false;
  }
  auto r = (*c)->read(in, dl);
  if (!r || *r != in.size() || in != out) {
    *why = r ? "short or wrong echo" : "read: " + r.error().message();
    return false;
  }
  (void)(*c)->close();
  return true;
}

std::vector<std::byte> hello_frame(std::mt19937_64& rng) {
  engine::Hello h;
  for (auto& b : h.flow_id) {
    b = static_cast<std::uint8_t>(rng());
  }
  for (auto& b : h.instance_id) {
    b = static_cast<std::uint8_t>(rng());
  }
  std::vector<std::byte> body;
  (void)engine::encode_frame(engine::Frame{h}, body);
  std::vector<std::byte> out;
  engine::append_stream_prefix(body.size(), out);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

struct FloodResult {
  std::uint64_t sent = 0;    // HELLOs written
  std::uint64_t failed = 0;  // carriers that could not connect / write
};

// flood runs in the peer namespace (the caller entered it): |n| carriers from |sources|
// addresses 10.0.1.100.., each writes one HELLO and closes at once; |wave| at a time.
FloodResult flood(std::uint64_t n, std::uint64_t sources, std::uint64_t wave) {
  FloodResult r;
  std::mt19937_64 rng(12345);
  auto dst = *Endpoint::parse_address("10.0.3.2", 7000);
  sockaddr_storage ds{};
  const socklen_t dl = dst.to_sockaddr(ds);
  for (std::uint64_t done = 0; done < n;) {
    const std::uint64_t k = std::min(wave, n - done);
    std::vector<UniqueFd> fds;
    std::vector<pollfd> ps;
    for (std::uint64_t i = 0; i < k; ++i) {
      UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
      auto src = *Endpoint::parse_address(
          "10.0.1." + std::to_string(100 + (done + i) % sources), 0);
      sockaddr_storage ss{};
      const socklen_t sl = src.to_sockaddr(ss);
      if (!s.valid() || ::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0 ||
          (::connect(s.get(), reinterpret_cast<sockaddr*>(&ds), dl) != 0 && errno != EINPROGRESS)) {
        ++r.failed;
        continue;
      }
      ps.push_back({s.get(), POLLOUT, 0});
      fds.push_back(std::move(s));
    }
    // Each carrier writes its HELLO as soon as it is connected (bounded wait per wave).
    std::vector<bool> sent(fds.size(), false);
    const auto end = Clock::now() + std::chrono::seconds(3);
    std::size_t left = fds.size();
    while (left > 0 && Clock::now() < end) {
      if (::poll(ps.data(), ps.size(), 100) <= 0) {
        continue;
      }
      for (std::size_t i = 0; i < ps.size(); ++i) {
        if (sent[i] || ps[i].revents == 0) {
          continue;
        }
        sent[i] = true;
        --left;
        ps[i].events = 0;
        const auto h = hello_frame(rng);
        if (::send(ps[i].fd, h.data(), h.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(h.size())) {
          ++r.sent;
        } else {
          ++r.failed;
        }
      }
    }
    r.failed += left;
    done += k;  // closing the wave's fds: the carriers close right after their HELLO
  }
  return r;
}

struct Action {
  const char* who;   // certificate name
  const char* to;    // "a" or "gw"
  agents::MsgType type;
};

}  // namespace

int run_hostile(std::span<char* const> args) {
  bool json = false;
  std::uint64_t hellos = 10000;
  std::uint64_t sources = 100;
  std::uint64_t settle_s = 10;
  std::uint64_t slowloris = 1000;
  std::uint64_t fault_mib = 512;
  ArgParser ap("rendr-bench hostile [--json] [options]",
               "Hostile inputs and agent faults in a gateway lab (named netns rbhost-*): a HELLO "
               "flood against an engine listener with a legitimate client dialling through it, "
               "unauthorized agent actions, a slowloris flood against an agent, and agent "
               "stops/kills during downloads. Needs root.");
  ap.flag("json", &json, "print one JSON object as the last line");
  bool keyed = false;
  ap.flag("listener-key", &keyed,
          "the engine listener and the legitimate client share a listener key; the flood has none");
  std::uint64_t arena_max = 0;
  bool listener_threads = false;
  ap.flag("listener-threads", &listener_threads,
          "the echo listener runs a thread per flow (blocking Conn calls) instead of one Asio "
          "thread for all flows: shows what per-thread malloc arenas keep after a flood");
  ap.uint("listener-arena-max", &arena_max, 0, 64,
          "cap the echo listener's malloc arenas (mallopt M_ARENA_MAX); 0 = glibc default");
  ap.uint("hellos", &hellos, 0, 1000000, "hostile HELLOs (0 skips the flood), default 10000");
  ap.uint("sources", &sources, 1, 150, "hostile source addresses, default 100");
  ap.uint("settle-s", &settle_s, 0, 120, "seconds after the floods before RSS is read, default 10");
  ap.uint("slowloris", &slowloris, 0, 100000,
          "never-finished handshakes per round against an agent (0 skips), default 1000");
  ap.uint("fault-mib", &fault_mib, 0, 65536,
          "download size for the agent faults in MiB (0 skips them), default 512");
  auto pr = ap.parse(args);
  if (!pr) {
    std::fprintf(stderr, "rendr-bench hostile: %s\n", pr.error().message().c_str());
    return kExitUsage;
  }
  if (!*pr) {
    return kExitOk;
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "rendr-bench hostile: needs root (netns, eBPF, TCP_REPAIR)\n");
    return kExitFailed;
  }
  raise_nofile_to_hard();
  ::signal(SIGPIPE, SIG_IGN);
  auto labr = lab::GatewayLab::create("rbhost");
  if (!labr) {
    std::fprintf(stderr, "rendr-bench hostile: %s\n", labr.error().message().c_str());
    return kExitFailed;
  }
  auto& lab = **labr;
  lab::AgentStackOptions so;
  so.agent_bin = RENDR_AGENT_BIN;
  so.rendrctl_bin = RENDRCTL_BIN;
  so.step_timeout_ms = 2000;  // handshakes that never finish are cut after this
  so.freeze_grace_ms = 500;
  auto str = lab::AgentStack::start(lab, so);
  if (!str) {
    std::fprintf(stderr, "rendr-bench hostile: %s\n", str.error().message().c_str());
    return kExitFailed;
  }
  auto& stack = **str;
  char self[4096] = {};
  if (::readlink("/proc/self/exe", self, sizeof self - 1) <= 0) {
    return kExitFailed;
  }
  std::string failures;
  JsonWriter j;
  j.begin_object();
  j.kv("bench", "hostile");

  // 1. HELLO flood against an engine listener, a legitimate client dialling through it.
  {
    std::vector<std::string> largv = {self, "hostile-listener", kListenAddr};
    if (keyed) {
      largv.emplace_back("--key");
    }
    if (listener_threads) {
      largv.emplace_back("--threads");
    }
    if (arena_max > 0) {
      largv.emplace_back("--arena-max");
      largv.emplace_back(std::to_string(arena_max));
    }
    (void)stack.spawn("b", largv, "listener");
    if (!stack.wait_log("listener", "ready", 10000)) {
      std::fprintf(stderr, "listener did not start: %s\n", stack.log("listener").c_str());
      return kExitFailed;
    }
    const pid_t lp = stack.pid("listener");
    std::string peer_if;
    for (const auto& i : lab::GatewayLab::interfaces()) {
      if (i.role == "peer" && !i.addr4.empty()) {
        peer_if = i.name;
      }
    }
    for (std::uint64_t s = 0; s < sources; ++s) {
      (void)lab.run("peer", "ip addr add 10.0.1." + std::to_string(100 + s) + "/24 dev " +
                                peer_if);
    }
    auto peer_ns = lab.netns_fd("peer");
    if (!peer_ns) {
      return kExitFailed;
    }
    std::string why;
    bool before_ok = false;
    {
      auto in = lab::NetnsEnter::enter(peer_ns->get());
      before_ok = legit_round_trip(&why, keyed);
    }
    const double base = rss_mb(lp);
    std::atomic<bool> flooding{true};
    std::atomic<int> during_ok{0};
    std::atomic<int> during_tries{0};
    std::string during_why;
    const int pfd = peer_ns->get();
    std::thread legit([&] {
      auto in = lab::NetnsEnter::enter(pfd);
      // At least three tries, then as long as the flood lasts.
      while (flooding || during_tries < 3) {
        std::string w;
        if (legit_round_trip(&w, keyed)) {
          ++during_ok;
        } else if (during_why.empty()) {
          during_why = w;
        }
        ++during_tries;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
    FloodResult fr;
    const auto t0 = Clock::now();
    {
      auto in = lab::NetnsEnter::enter(pfd);
      fr = flood(hellos, sources, 500);
    }
    const double flood_s = ms_between(t0, Clock::now()) / 1000.0;
    flooding = false;
    legit.join();
    int after_ok = 0;
    std::string after_why;
    {
      auto in = lab::NetnsEnter::enter(pfd);
      for (int i = 0; i < 3; ++i) {
        std::string w;
        after_ok += legit_round_trip(&w, keyed) ? 1 : 0;
        if (!w.empty() && after_why.empty()) {
          after_why = w;
        }
      }
    }
    double peak = rss_mb(lp);
    const long threads_peak = threads_of(lp);
    // The listener prints its counters once a second: wait for a line from after the flood.
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    const ListenerCounts counts = last_counts(stack.log("listener"));
    std::this_thread::sleep_for(std::chrono::seconds(settle_s));
    const double after = rss_mb(lp);
    const ListenerCounts settled = last_counts(stack.log("listener"));
    std::fprintf(stderr, "listener: %ld threads right after the flood, %ld after %llu s\n",
                 threads_peak, threads_of(lp), static_cast<unsigned long long>(settle_s));
    peak = std::max(peak, after);
    std::fprintf(stderr,
                 "flood: %llu HELLOs from %llu sources in %.1f s (%llu failed); legit dials "
                 "before %s, during %d/%d ok%s%s, after %d/3 ok%s%s; listener RSS %.1f -> %.1f MB\n",
                 static_cast<unsigned long long>(fr.sent),
                 static_cast<unsigned long long>(sources), flood_s,
                 static_cast<unsigned long long>(fr.failed), before_ok ? "ok" : why.c_str(),
                 during_ok.load(), during_tries.load(), during_why.empty() ? "" : ": ",
                 during_why.c_str(), after_ok, after_why.empty() ? "" : ": ", after_why.c_str(),
                 base, after);
    const double during_frac =
        during_tries > 0 ? static_cast<double>(during_ok) / during_tries : 0.0;
    j.kv("hostile_hellos", fr.sent);
    j.kv("hostile_sources", sources);
    j.kv("flood_s", flood_s);
    j.kv("legit_dials_during_flood", static_cast<std::int64_t>(during_tries.load()));
    j.kv("legit_dial_ok_during_flood", during_frac);
    j.kv("legit_dial_ok_after_flood", after_ok / 3.0);
    j.kv("listener_rss_base_mb", base);
    j.kv("listener_rss_after_mb", after);
    j.kv("listener_rss_growth_mb", after - base);
    j.kv("listener_key", keyed);
    j.kv("listener_arena_max", arena_max);
    j.kv("listener_thread_per_flow", listener_threads);
    j.kv("listener_flows_after_flood", counts.flows);
    j.kv("listener_flows_at_rss_read", settled.flows);
    j.kv("listener_key_refused", counts.key_refused);
    if (!before_ok) {
      failures += "legit dial before the flood: " + why + "; ";
    }
    if (!alive(lp)) {
      failures += "the listener died; ";
    }
  }

  // 2. Unauthorized actions.
  {
    std::uint64_t tried = 0;
    std::uint64_t accepted = 0;
    if (auto st = stack.issue_cert("mallory"); !st) {
      failures += "issue a certificate: " + st.error().message() + "; ";
    }
    auto gw_ns = lab.netns_fd("gw");
    using agents::MsgType;
    const std::vector<Action> actions = {
        {"mallory", "a", MsgType::status},  {"mallory", "a", MsgType::offer},
        {"mallory", "a", MsgType::commit},  {"mallory", "a", MsgType::abort},
        {"mallory", "a", MsgType::query},   {"mallory", "gw", MsgType::steer},
        {"mallory", "gw", MsgType::steer_check}, {"gw", "a", MsgType::offer},
        {"gw", "a", MsgType::commit},       {"gw", "a", MsgType::abort},
        {"gw", "a", MsgType::query},        {"b", "a", MsgType::steer},
        {"gw", "gw", MsgType::steer},
    };
    for (const auto& act : actions) {
      const std::string ip = std::string(act.to) == "a" ? lab::GatewayLab::host_addr4(lab::Host::a)
                                                        : lab::GatewayLab::gw_addr4(lab::Host::a);
      ++tried;
      auto c = lab::AgentTlsClient::open(stack.dir(), act.who, gw_ns ? gw_ns->get() : -1, ip);
      if (!c) {
        continue;  // refused within the handshake
      }
      agents::Message m(act.type);
      m.add_u64(agents::Tag::mig, 7).add(agents::Tag::service, "http").add(agents::Tag::backend, "b");
      m.add(agents::Tag::tuple, "10.99.0.1:8080->10.0.1.2:40000");
      auto r = (*c)->ask(m);
      const bool refused = !r.has_value() || r->type() == MsgType::fail;
      if (!refused) {
        ++accepted;
        std::fprintf(stderr, "authz: %s -> %s %s was answered with %s\n", act.who, act.to,
                     agents::to_string(act.type), agents::to_string(r->type()));
      }
    }
    j.kv("unauthorized_actions_tried", tried);
    j.kv("unauthorized_actions_accepted", accepted);
    std::fprintf(stderr, "authz: %llu unauthorized actions tried, %llu carried out\n",
                 static_cast<unsigned long long>(tried), static_cast<unsigned long long>(accepted));
  }

  // 3. Slowloris against agent a.
  {
    const pid_t ap2 = stack.pid("a");
    const double base = rss_mb(ap2);
    double peak = base;
    auto peer_ns = lab.netns_fd("peer");
    auto ep = *Endpoint::parse_address(lab::GatewayLab::host_addr4(lab::Host::a), 7300);
    sockaddr_storage ss{};
    const socklen_t sl = ep.to_sockaddr(ss);
    for (int round = 0; round < 3 && slowloris > 0; ++round) {
      std::vector<UniqueFd> held;
      {
        auto in = lab::NetnsEnter::enter(peer_ns->get());
        for (std::uint64_t i = 0; i < slowloris; ++i) {
          UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
          if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
            continue;
          }
          if (i % 2 == 0) {  // half start a TLS record and stop, half send nothing
            const unsigned char hdr[] = {0x16, 0x03, 0x01, 0x02, 0x00};
            (void)::send(fd.get(), hdr, sizeof hdr, MSG_NOSIGNAL);
          }
          held.push_back(std::move(fd));
        }
      }
      peak = std::max(peak, rss_mb(ap2));
      std::this_thread::sleep_for(std::chrono::milliseconds(so.step_timeout_ms + 500));
    }
    std::this_thread::sleep_for(std::chrono::seconds(settle_s));
    const double after = rss_mb(ap2);
    auto gw_ns = lab.netns_fd("gw");
    bool channel_ok = false;
    if (auto c = lab::AgentTlsClient::open(stack.dir(), "b", gw_ns ? gw_ns->get() : -1,
                                           lab::GatewayLab::host_addr4(lab::Host::a))) {
      channel_ok = (*c)->ask(agents::Message(agents::MsgType::status)).has_value();
    }
    std::fprintf(stderr, "slowloris: agent a RSS %.1f MB, peak %.1f, after %.1f; a peer's "
                         "channel afterwards: %s\n",
                 base, peak, after, channel_ok ? "ok" : "REFUSED");
    j.kv("agent_rss_base_mb", base);
    j.kv("agent_rss_peak_mb", peak);
    j.kv("agent_rss_after_flood_mb", after);
    j.kv("agent_channel_ok_after_flood", channel_ok);
    if (!channel_ok) {
      failures += "agent a refused a configured peer after the slowloris flood; ";
    }
  }

  // 4. Agent faults during downloads.
  std::uint64_t faults_tried = 0;
  std::uint64_t lost = 0;
  std::uint64_t crashes = 0;
  if (fault_mib > 0) {
    const std::uint64_t size = fault_mib << 20;
    if (auto st = write_bench_file(stack.dir() + "/bulk", size); !st) {
      std::fprintf(stderr, "rendr-bench: %s\n", st.error().message().c_str());
      return kExitFailed;
    }
    start_fileservers(stack, stack.dir());
    // (a) the source agent stopped for 8 s right after a migration was asked.
    // (b) the serving host's agent killed while the download runs.
    // (c) the source agent killed after it froze the flow (staged on b, steered there) and
    //     started again at once: it reclaims the frozen connection from its server.
    static const char* const kFaultNames[] = {"source agent stopped 8 s mid-migration",
                                              "serving agent killed",
                                              "source agent killed after the freeze, restarted"};
    for (int fault = 0; fault < 3; ++fault) {
      ++faults_tried;
      if (fault == 2) {
        // (b) left a without an agent: start it again with a pause before COMMIT, and wait
        // until its file server is registered again.
        stack.stop("a", SIGKILL);
        if (auto st = stack.start_agent("a", {"--fault", "stall_before_commit"}); !st) {
          failures += "restart agent a: " + st.error().message() + "; ";
          continue;
        }
        (void)stack.wait_log("fs-a", "agent back", 10000);
      }
      auto fd = request_file(lab, "bulk");
      if (!fd) {
        failures += "fault download: " + fd.error().message() + "; ";
        ++lost;
        continue;
      }
      const std::string tuple = server_tuple(fd->get());
      std::thread act([&, fault] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        const pid_t a = stack.pid("a");
        if (fault == 0) {
          std::thread mig([&] { (void)stack.migrate("a", {tuple}, "b"); });
          std::this_thread::sleep_for(std::chrono::milliseconds(3));
          ::kill(a, SIGSTOP);
          std::this_thread::sleep_for(std::chrono::seconds(8));
          ::kill(a, SIGCONT);
          mig.join();
        } else if (fault == 1) {
          ::kill(a, SIGKILL);  // host a serves the flow (the default backend)
        } else {
          std::thread mig([&] { (void)stack.migrate("a", {tuple}, "b"); });
          std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // inside the pause
          stack.stop("a", SIGKILL);
          (void)stack.start_agent("a");
          mig.join();
        }
      });
      if (fault == 2) {
        // Read nothing until the flow is frozen: a short download (the smoke's) would be over
        // before the migration, and the fault would try nothing. The server's queues fill.
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      }
      const Download d = read_body(fd->get(), size);
      act.join();
      const bool ok = d.got == size && d.bad == 0;
      lost += ok ? 0 : 1;
      if (fault == 2 && !stack.wait_log("a", " query round(s)", 5000)) {
        // The fault must have hit a frozen flow, or it tried nothing.
        failures += "fault (c): the restarted agent a reclaimed nothing; ";
      }
      std::fprintf(stderr, "fault %s: %llu of %llu bytes, %llu wrong%s%s\n", kFaultNames[fault],
                   static_cast<unsigned long long>(d.got), static_cast<unsigned long long>(size),
                   static_cast<unsigned long long>(d.bad), d.error.empty() ? "" : ": ",
                   d.error.c_str());
    }
    for (const char* n : {"gw", "b"}) {
      crashes += alive(stack.pid(n)) ? 0 : 1;
    }
  }
  j.kv("faults_tried", faults_tried);
  j.kv("connections_lost", lost);
  j.kv("agent_crashes", crashes);
  if (!failures.empty()) {
    j.kv("failures", failures);
  }
  j.end_object();
  std::printf("%s\n", j.str().c_str());
  return failures.empty() ? kExitOk : kExitFailed;
}

}  // namespace rendr::bench
