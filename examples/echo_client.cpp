// SPDX-License-Identifier: Apache-2.0
// rendr example: an echo client that keeps one flow over several paths.
//
// It dials one rendr stream flow over every --path, sends bytes, and checks that the echo
// comes back complete and in order while it moves the flow between paths (Admin::migrate) and
// kills the active path's carrier (as a dead network would). Interactive by default: each stdin
// line is sent and its echo printed; the lines "/migrate", "/kill" and "/stats" act on the flow.
// See docs/engine.md, "Examples".
//
//   rendr-example-echo-client --path tcp:127.0.0.1:7000 --path tcp:127.0.0.1:7000@127.0.0.2
//   rendr-example-echo-client --path ... --path ... --bytes 64M --migrate-every 8M --kill-at 20M
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace {

void usage(std::FILE* out) {
  std::fputs(
      "usage: rendr-example-echo-client --path SPEC [--path SPEC ...] [--bytes N]\n"
      "                                 [--migrate-every N] [--kill-at N] [--json]\n"
      "  SPEC is TRANSPORT:IP:PORT[@LOCAL_IP], TRANSPORT tcp or udpflow,\n"
      "  e.g. tcp:127.0.0.1:7000@127.0.0.2 (dial from 127.0.0.2).\n"
      "  Without --bytes: interactive; each stdin line is echoed, and the lines\n"
      "  /migrate (switch to the next path), /kill (kill the active path's carrier)\n"
      "  and /stats (print the paths) act on the flow.\n"
      "  --bytes N          send N bytes (K/M/G suffixes), check the echo, print a summary\n"
      "  --migrate-every N  switch to the next path after every N bytes sent\n"
      "  --kill-at N        kill the active path's carrier once N bytes were sent\n"
      "  --json             summary as one JSON line\n"
      "  Exit status 0 when every byte came back exactly once and in order.\n",
      out);
}

bool parse_size(const std::string& s, std::uint64_t& out) {
  if (s.empty()) {
    return false;
  }
  std::size_t used = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &used);
  } catch (...) {
    return false;
  }
  std::uint64_t mul = 1;
  const std::string suffix = s.substr(used);
  if (suffix == "K" || suffix == "k") {
    mul = 1ULL << 10;
  } else if (suffix == "M" || suffix == "m") {
    mul = 1ULL << 20;
  } else if (suffix == "G" || suffix == "g") {
    mul = 1ULL << 30;
  } else if (!suffix.empty()) {
    return false;
  }
  out = v * mul;
  return true;
}

bool parse_path(const std::string& s, rendr::PathSpec& spec) {
  const auto colon = s.find(':');
  if (colon == std::string::npos) {
    return false;
  }
  spec.transport = s.substr(0, colon);
  std::string rest = s.substr(colon + 1);
  if (const auto at = rest.rfind('@'); at != std::string::npos) {
    spec.local = rest.substr(at + 1);
    rest.resize(at);
  }
  spec.address = rest;
  return (spec.transport == "tcp" || spec.transport == "udpflow") && !spec.address.empty();
}

// The byte at offset |i| of the test stream: a pattern whose every window is position-unique
// enough to catch a lost, repeated or reordered chunk.
std::byte pattern_at(std::uint64_t i) {
  return static_cast<std::byte>((i * 2654435761ULL) >> 13);
}

rendr::PathId next_path(rendr::Conn& conn) {
  const auto st = conn.stats();
  std::vector<rendr::PathId> ready;
  for (const auto& p : st.paths) {
    if (p.state == rendr::engine::PathState::ready) {
      ready.push_back(p.id);
    }
  }
  if (ready.empty()) {
    return 0;
  }
  auto it = std::find(ready.begin(), ready.end(), st.active_path);
  if (it == ready.end() || ++it == ready.end()) {
    return ready.front();
  }
  return *it;
}

void print_paths(rendr::Conn& conn) {
  const auto st = conn.stats();
  for (const auto& p : st.paths) {
    std::printf("  path %llu %s %s -> %s%s\n", static_cast<unsigned long long>(p.id),
                p.transport.c_str(), p.local.c_str(), p.remote.c_str(),
                p.active ? " (active)" : "");
  }
  std::fflush(stdout);
}

int interactive(rendr::Conn& conn) {
  std::string line;
  std::vector<std::byte> echo;
  while (std::getline(std::cin, line)) {
    if (line == "/migrate") {
      const auto to = next_path(conn);
      const auto st = conn.migrate(to);
      std::printf("migrate to path %llu: %s\n", static_cast<unsigned long long>(to),
                  st ? "ok" : st.error().message().c_str());
      continue;
    }
    if (line == "/kill") {
      const auto victim = conn.active_path();
      conn.kill_path_for_test(victim);
      std::printf("killed path %llu's carrier\n", static_cast<unsigned long long>(victim));
      continue;
    }
    if (line == "/stats") {
      print_paths(conn);
      continue;
    }
    line += '\n';
    const auto* p = reinterpret_cast<const std::byte*>(line.data());
    if (auto w = conn.write({p, line.size()}); !w) {
      std::fprintf(stderr, "echo-client: write: %s\n", w.error().message().c_str());
      return 1;
    }
    echo.resize(line.size());
    if (auto r = conn.read(echo); !r || *r != line.size()) {
      std::fprintf(stderr, "echo-client: read: %s\n",
                   r ? "the server closed early" : r.error().message().c_str());
      return 1;
    }
    std::fwrite(echo.data(), 1, echo.size(), stdout);
    std::fflush(stdout);
  }
  return conn.close() ? 0 : 1;
}

struct Plan {
  std::uint64_t bytes = 0;
  std::uint64_t migrate_every = 0;
  std::uint64_t kill_at = 0;
  bool json = false;
};

int transfer(rendr::Conn& conn, const Plan& plan) {
  const auto start = std::chrono::steady_clock::now();
  std::atomic<std::uint64_t> received{0};
  std::uint64_t mismatches = 0;
  std::string read_error;
  // The reader checks every echoed byte against the pattern while the writer sends.
  std::thread reader([&] {
    std::vector<std::byte> buf(64 * 1024);
    std::uint64_t off = 0;
    while (off < plan.bytes) {
      const auto want = std::min<std::uint64_t>(buf.size(), plan.bytes - off);
      auto n = conn.read_some(std::span<std::byte>(buf.data(), want));
      if (!n || *n == 0) {
        read_error = n ? "the server closed early" : n.error().message();
        break;
      }
      for (std::size_t i = 0; i < *n; ++i) {
        mismatches += buf[i] != pattern_at(off + i) ? 1 : 0;
      }
      off += *n;
      received = off;
    }
  });
  std::vector<std::byte> chunk(64 * 1024);
  std::uint64_t sent = 0;
  std::uint64_t next_migrate = plan.migrate_every;
  bool killed = plan.kill_at == 0;
  int switches = 0;
  std::string write_error;
  while (sent < plan.bytes) {
    const auto n = std::min<std::uint64_t>(chunk.size(), plan.bytes - sent);
    for (std::uint64_t i = 0; i < n; ++i) {
      chunk[i] = pattern_at(sent + i);
    }
    if (auto w = conn.write(std::span<const std::byte>(chunk.data(), n)); !w) {
      write_error = w.error().message();
      break;
    }
    sent += n;
    if (next_migrate != 0 && sent >= next_migrate) {
      next_migrate += plan.migrate_every;
      // With one path left (after --kill-at, say) there is nothing to switch to.
      if (const auto to = next_path(conn);
          to != 0 && to != conn.active_path() && conn.migrate(to)) {
        ++switches;
      }
    }
    if (!killed && sent >= plan.kill_at) {
      killed = true;
      conn.kill_path_for_test(conn.active_path());  // the engine replays what it lost
    }
  }
  reader.join();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const bool ok =
      write_error.empty() && read_error.empty() && mismatches == 0 && received == plan.bytes;
  const auto st = conn.stats();
  if (plan.json) {
    std::printf(
        "{\"ok\":%s,\"bytes_sent\":%llu,\"bytes_echoed\":%llu,\"mismatches\":%llu,"
        "\"explicit_migrations\":%d,\"migration_count\":%llu,\"replayed_frames\":%llu,"
        "\"paths_lost\":%llu,\"seconds\":%.3f}\n",
        ok ? "true" : "false", static_cast<unsigned long long>(sent),
        static_cast<unsigned long long>(received.load()),
        static_cast<unsigned long long>(mismatches), switches,
        static_cast<unsigned long long>(st.migration_count),
        static_cast<unsigned long long>(st.replayed_frames),
        static_cast<unsigned long long>(st.paths_lost), secs);
  } else {
    std::printf(
        "%llu bytes sent, %llu echoed, %llu mismatched, %d explicit migrations, "
        "%llu path switches in all, %llu frames replayed, %llu paths lost, %.2f s\n",
        static_cast<unsigned long long>(sent), static_cast<unsigned long long>(received.load()),
        static_cast<unsigned long long>(mismatches), switches,
        static_cast<unsigned long long>(st.migration_count),
        static_cast<unsigned long long>(st.replayed_frames),
        static_cast<unsigned long long>(st.paths_lost), secs);
  }
  if (!write_error.empty()) {
    std::fprintf(stderr, "echo-client: write: %s\n", write_error.c_str());
  }
  if (!read_error.empty()) {
    std::fprintf(stderr, "echo-client: read: %s\n", read_error.c_str());
  }
  std::fflush(stdout);
  const auto closed = conn.close();
  if (!closed) {
    std::fprintf(stderr, "echo-client: close: %s\n", closed.error().message().c_str());
  }
  return ok && closed ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  rendr::DialOptions opts;
  Plan plan;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (a == "--path" && has_value) {
      rendr::PathSpec spec;
      if (!parse_path(argv[++i], spec)) {
        std::fprintf(stderr, "echo-client: bad --path '%s' (want tcp:IP:PORT[@LOCAL_IP])\n",
                     argv[i]);
        return 2;
      }
      opts.paths.push_back(spec);
    } else if ((a == "--bytes" || a == "--migrate-every" || a == "--kill-at") && has_value) {
      std::uint64_t v = 0;
      if (!parse_size(argv[++i], v)) {
        std::fprintf(stderr, "echo-client: bad size '%s' for %s\n", argv[i], a.c_str());
        return 2;
      }
      (a == "--bytes" ? plan.bytes : a == "--kill-at" ? plan.kill_at : plan.migrate_every) = v;
    } else if (a == "--json") {
      plan.json = true;
    } else {
      std::fprintf(stderr, "echo-client: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (opts.paths.empty()) {
    std::fprintf(stderr, "echo-client: give at least one --path\n");
    usage(stderr);
    return 2;
  }
  auto dialer = rendr::Dialer::create(opts);
  if (!dialer) {
    std::fprintf(stderr, "echo-client: %s\n", dialer.error().message().c_str());
    return 2;
  }
  auto conn = (*dialer)->dial();
  if (!conn) {
    std::fprintf(stderr, "echo-client: dial: %s\n", conn.error().message().c_str());
    return 1;
  }
  if (plan.bytes == 0) {
    print_paths(**conn);
    return interactive(**conn);
  }
  return transfer(**conn, plan);
}
