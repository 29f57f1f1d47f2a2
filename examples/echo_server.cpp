// SPDX-License-Identifier: Apache-2.0
// rendr example: an echo server on the engine API.
//
// It listens for rendr stream flows on one TCP port and echoes every byte back. A client may
// reach it over several paths (several carriers to this port, from different source addresses
// or over different networks); the engine replays what a dying path lost, so the echo never
// misses or repeats a byte while paths come and go. See docs/engine.md, "Examples".
//
//   rendr-example-echo-server --listen 127.0.0.1:7000
#include <rendr/engine/conn.hpp>
#include <rendr/engine/listener.hpp>

#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

namespace {

void usage(std::FILE* out) {
  std::fputs(
      "usage: rendr-example-echo-server [--listen ADDR] [--once]\n"
      "  Echoes every byte of each rendr stream flow back to its sender.\n"
      "  --listen ADDR  tcp address to listen on (default 127.0.0.1:7000; port 0 = any).\n"
      "                 The first line on stdout is 'listening on IP:PORT'.\n"
      "  --once         serve one flow, then exit (for scripts and tests).\n",
      out);
}

// serve echoes until the peer closes (read returns 0 = a clean BYE) or the flow fails.
void serve(rendr::Conn& conn) {
  std::array<std::byte, 64 * 1024> buf{};
  std::uint64_t total = 0;
  for (;;) {
    auto n = conn.read_some(buf);
    if (!n) {
      std::fprintf(stderr, "echo-server: flow ended: %s\n", n.error().message().c_str());
      return;
    }
    if (*n == 0) {
      break;  // EOF: the client closed after its last byte
    }
    if (auto w = conn.write(std::span<const std::byte>(buf.data(), *n)); !w) {
      std::fprintf(stderr, "echo-server: write: %s\n", w.error().message().c_str());
      return;
    }
    total += *n;
  }
  std::printf("flow done: %llu bytes echoed, %llu path switches\n",
              static_cast<unsigned long long>(total),
              static_cast<unsigned long long>(conn.migration_count()));
  std::fflush(stdout);
  (void)conn.close();
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:7000";
  bool once = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (a == "--listen" && i + 1 < argc) {
      listen = argv[++i];
    } else if (a == "--once") {
      once = true;
    } else {
      std::fprintf(stderr, "echo-server: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  auto listener = rendr::listen_tcp(listen);
  if (!listener) {
    std::fprintf(stderr, "echo-server: cannot listen on %s: %s\n", listen.c_str(),
                 listener.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", (*listener)->local_address().c_str());
  std::fflush(stdout);
  for (;;) {
    auto conn = (*listener)->accept();
    if (!conn) {
      std::fprintf(stderr, "echo-server: accept: %s\n", conn.error().message().c_str());
      return 1;
    }
    if (once) {
      serve(**conn);
      return 0;
    }
    // One thread per flow keeps the example short; Conn also has an Asio face
    // (async_read_some / async_write_some) for servers with many flows.
    std::thread([c = std::move(*conn)] { serve(*c); }).detach();
  }
}
