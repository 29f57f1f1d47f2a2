// SPDX-License-Identifier: Apache-2.0
// rendr example: packet flows (PacketConn). One write is one packet; packets arrive reliably,
// each exactly once, in arrival order (not necessarily send order). Here both ends run in one
// process over udpflow carriers on loopback: the client sends numbered packets over two paths
// while it kills the active path, and checks that every number came back exactly once.
// See docs/engine.md, "Examples".
//
//   rendr-example-packet-echo --packets 20000 --size 1000
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/listener.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

void usage(std::FILE* out) {
  std::fputs(
      "usage: rendr-example-packet-echo [--packets N] [--size BYTES] [--transport T]\n"
      "  Runs a packet-flow echo server and client in one process on 127.0.0.1 over two\n"
      "  paths, kills the active path half way, and checks that every packet came back\n"
      "  exactly once. Prints one JSON line; exit status 0 when nothing was lost or repeated.\n"
      "  --packets N    packets to send (default 20000)\n"
      "  --size BYTES   bytes per packet, >= 8 (default 1000)\n"
      "  --transport T  udpflow (default) or tcp\n",
      out);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t packets = 20000;
  std::size_t size = 1000;
  std::string transport = "udpflow";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (a == "--packets" && i + 1 < argc) {
      packets = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--size" && i + 1 < argc) {
      size = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--transport" && i + 1 < argc) {
      transport = argv[++i];
    } else {
      std::fprintf(stderr, "packet-echo: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (packets == 0 || size < 8 || (transport != "udpflow" && transport != "tcp")) {
    std::fprintf(stderr, "packet-echo: need --packets > 0, --size >= 8, udpflow or tcp\n");
    return 2;
  }

  // Server: accept one packet flow and send every packet straight back.
  auto listener =
      transport == "tcp" ? rendr::listen_tcp("127.0.0.1:0") : rendr::listen_udpflow("127.0.0.1:0");
  if (!listener) {
    std::fprintf(stderr, "packet-echo: listen: %s\n", listener.error().message().c_str());
    return 1;
  }
  std::thread server([l = listener->get()] {
    auto pc = l->accept_packet();
    if (!pc) {
      return;
    }
    std::vector<std::byte> pkt;
    for (;;) {
      auto r = (*pc)->read(pkt);
      if (!r || !*r) {
        break;  // error, or EOF after the client's close
      }
      if (!(*pc)->write(pkt)) {
        break;
      }
    }
    (void)(*pc)->close();
  });

  // Client: two paths to the same listener; the second dials from 127.0.0.2.
  rendr::DialOptions opts;
  rendr::PathSpec first;
  first.transport = transport;
  first.address = (*listener)->local_address();
  rendr::PathSpec second = first;
  second.local = "127.0.0.2";
  opts.paths = {first, second};
  auto dialer = rendr::Dialer::create(opts);
  if (!dialer) {
    std::fprintf(stderr, "packet-echo: %s\n", dialer.error().message().c_str());
    return 1;
  }
  auto pc = (*dialer)->dial_packet();
  if (!pc) {
    std::fprintf(stderr, "packet-echo: dial: %s\n", pc.error().message().c_str());
    (*listener)->close();
    server.join();
    return 1;
  }
  if (size > (*pc)->max_packet()) {
    std::fprintf(stderr, "packet-echo: --size %zu is above this flow's max_packet %zu\n", size,
                 (*pc)->max_packet());
    return 2;
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::uint8_t> seen(packets, 0);
  std::size_t received = 0;
  std::size_t bad = 0;
  std::thread reader([&] {
    std::vector<std::byte> pkt;
    while (received < packets) {
      auto r = (*pc)->read(pkt);
      if (!r || !*r || pkt.size() != size) {
        ++bad;
        break;
      }
      std::uint64_t n = 0;
      std::memcpy(&n, pkt.data(), sizeof n);
      if (n >= packets || seen[n]++ != 0) {
        ++bad;  // unknown or repeated packet
      }
      ++received;
    }
  });
  std::vector<std::byte> pkt(size, std::byte{0x5a});
  for (std::uint64_t n = 0; n < packets; ++n) {
    std::memcpy(pkt.data(), &n, sizeof n);
    if (auto w = (*pc)->write(pkt); !w) {
      std::fprintf(stderr, "packet-echo: write: %s\n", w.error().message().c_str());
      break;
    }
    if (n == packets / 2) {
      (*pc)->kill_path_for_test((*pc)->active_path());  // a path dies mid-stream
    }
  }
  reader.join();
  std::size_t missing = 0;
  for (auto s : seen) {
    missing += s == 0 ? 1 : 0;
  }
  const auto st = (*pc)->stats();
  const auto t1 = std::chrono::steady_clock::now();
  (void)(*pc)->close();
  server.join();
  const auto t2 = std::chrono::steady_clock::now();
  const auto secs = [](auto d) { return std::chrono::duration<double>(d).count(); };
  const bool ok = missing == 0 && bad == 0;
  std::printf(
      "{\"ok\":%s,\"packets\":%zu,\"received\":%zu,\"missing\":%zu,\"bad\":%zu,"
      "\"paths_lost\":%llu,\"migration_count\":%llu,\"echo_s\":%.3f,\"close_s\":%.3f}\n",
      ok ? "true" : "false", packets, received, missing, bad,
      static_cast<unsigned long long>(st.paths_lost),
      static_cast<unsigned long long>(st.migration_count), secs(t1 - t0), secs(t2 - t1));
  return ok ? 0 : 1;
}
