// SPDX-License-Identifier: Apache-2.0
// Half-close over the public API and real loopback TCP carriers (port 0, 127.0.0.1 only):
// Conn::shutdown_write, then the active path killed at once; the listener's side reads every
// byte and EOF, answers on the still-open direction, and the dialer reads all of it. Waits are
// on the API's own blocking calls and deadlines, never sleeps.
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/errors.hpp>
#include <rendr/engine/listener.hpp>

#include "support/pattern.hpp"
#include "support/require_result.hpp"

#include "api_helpers.hpp"

#include <catch2/catch.hpp>

#include <thread>
#include <vector>

using namespace rendr;
using namespace std::chrono_literals;
using rendr::test::Pattern;

namespace {

using rendr::test::api::fast_cfg;
using rendr::test::api::tcp_path;

// The helpers assert nothing (the server half runs on its own thread): they return the error.
Status write_pattern(Conn& c, const Pattern& p, std::uint64_t total) {
  std::vector<std::byte> buf(64 * 1024);
  for (std::uint64_t off = 0; off < total;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - off));
    p.fill(off, std::span(buf).first(n));
    RENDR_TRY(c.write(std::span(buf).first(n), deadline_in(10s)));
    off += n;
  }
  return {};
}

struct ReadResult {
  std::uint64_t got = 0;
  bool intact = true;
};

// read_to_eof reads until EOF, checking the bytes against |p| at their offsets.
Result<ReadResult> read_to_eof(Conn& c, const Pattern& p) {
  std::vector<std::byte> buf(64 * 1024);
  ReadResult r;
  while (true) {
    auto n = c.read_some(buf, deadline_in(10s));
    if (!n) {
      return std::move(n).take_error();
    }
    if (*n == 0) {
      return r;
    }
    r.intact = r.intact && p.mismatch(r.got, std::span(buf).first(*n)) < 0;
    r.got += *n;
  }
}

}  // namespace

TEST_CASE("engine net half-close: shutdown_write survives a path killed right after it",
          "[engine][halfclose][net]") {
  ListenOptions lo;
  lo.flow = fast_cfg();
  auto l = listen_tcp("127.0.0.1:0", lo);
  REQUIRE_OK(l);
  DialOptions o;
  static_cast<engine::FlowConfig&>(o) = fast_cfg();
  o.paths = {tcp_path(**l, "a"), tcp_path(**l, "b")};
  auto d = Dialer::create(o);
  REQUIRE_OK(d);
  auto c = (*d)->dial();
  REQUIRE_OK(c);
  auto s = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s);
  constexpr std::uint64_t kUp = 4U << 20;
  constexpr std::uint64_t kDown = 3U << 20;
  const Pattern up(11);
  const Pattern down(12);
  // The server reads the request to EOF, then answers and closes.
  Result<ReadResult> at_server = ReadResult{};
  Status answered;
  Status closed;
  std::thread server([&] {
    at_server = read_to_eof(**s, up);
    if (at_server) {
      answered = write_pattern(**s, down, kDown);
      closed = (*s)->close();
    }
  });
  Status sent = write_pattern(**c, up, kUp);
  Status shut = sent ? (*c)->shutdown_write() : Status{};
  (*c)->kill_path_for_test((*c)->active_path());
  auto after = (*c)->write(std::vector<std::byte>(1), deadline_in(1s));
  auto at_client = read_to_eof(**c, down);
  server.join();
  REQUIRE_OK(sent);
  REQUIRE_OK(shut);
  REQUIRE_ERROR(after, engine::errc::closed, "shutdown_write");
  REQUIRE_OK(at_server);
  REQUIRE_OK(answered);
  REQUIRE_OK(closed);
  REQUIRE_OK(at_client);
  CHECK(at_server->got == kUp);
  CHECK(at_server->intact);
  CHECK(at_client->got == kDown);
  CHECK(at_client->intact);
  CHECK((*s)->stats().peer_write_shut);
  CHECK((*c)->stats().paths_lost >= 1);
}
