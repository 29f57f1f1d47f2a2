// SPDX-License-Identifier: Apache-2.0
// The engine's StreamCarrier over a userstack Connection: an async echo driven by asio.
#include "tun_lab.hpp"

#include "support/require_result.hpp"

#include <rendr/userstack/carrier.hpp>
#include <rendr/userstack/stack.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <cstdio>
#include <functional>
#include <future>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;

TEST_CASE("userstack StreamCarrier over a Connection carries an 8 MiB echo",
          "[.netns][userstack][netns]") {
  StackLab lab;
  const long long resets0 = lab.resets();
  constexpr std::uint64_t kTotal = 8ULL << 20;
  auto client = std::async(std::launch::async, [] {
    return echo_client(Endpoint::parse("198.18.0.30:4433").value(), kTotal, 77, 60s);
  });
  auto acc = lab.stack().accept(5s);
  REQUIRE_OK(acc);
  asio::io_context io;
  auto carrier = userstack::make_connection_carrier(io, std::move(acc).value());
  REQUIRE_OK(carrier);
  StreamCarrier& c = **carrier;
  CHECK(c.local() == "198.18.0.30:4433");

  std::vector<std::byte> buf(64 * 1024);
  std::error_code end;
  std::uint64_t echoed = 0;
  std::function<void()> read_next = [&] {
    c.async_read_some(buf, [&](std::error_code ec, std::size_t n) {
      if (ec) {
        end = ec;
        c.close();  // EOF from the peer: finish our side too (FIN)
        return;
      }
      c.async_write(std::span<const std::byte>(buf.data(), n),
                    [&](std::error_code wec, std::size_t m) {
                      if (wec) {
                        end = wec;
                        c.close();
                        return;
                      }
                      echoed += m;
                      read_next();
                    });
    });
  };
  read_next();
  io.run_for(60s);
  EchoResult r = client.get();
  INFO("client: " << r.error << " carrier end: " << end.message());
  CHECK(end == asio::error::eof);
  CHECK(echoed == kTotal);
  CHECK(r.error.empty());
  CHECK(r.received == kTotal);
  CHECK(r.first_bad == -1);
  CHECK(r.eof);
  CHECK(lab.resets() == resets0);
  std::printf("userstack StreamCarrier echo: %.0f MiB each way in %.2f s\n",
              static_cast<double>(kTotal) / (1 << 20), r.seconds);
  carrier->reset();
}
