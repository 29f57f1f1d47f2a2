// SPDX-License-Identifier: Apache-2.0
// The listener key over real loopback sockets (port 0, 127.0.0.1): a keyed listener lets in a
// dialer with its key (tcp and udpflow, extra paths by BRIDGE_TAG too) and refuses one without
// it, with another key or replaying a recorded HELLO, before any flow exists for it; a keyed
// dialer also reaches an unkeyed listener.
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/errors.hpp>
#include <rendr/engine/listener.hpp>
#include <rendr/engine/core/listener_key.hpp>
#include <rendr/engine/core/wire.hpp>

#include "support/require_result.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

using namespace rendr;
using namespace std::chrono_literals;

namespace {

std::vector<std::uint8_t> key_of(std::uint8_t seed) {
  std::vector<std::uint8_t> k(32);
  for (std::size_t i = 0; i < k.size(); ++i) {
    k[i] = static_cast<std::uint8_t>(seed + 13 * i);
  }
  return k;
}

ListenOptions keyed_listener(std::vector<std::uint8_t> key) {
  ListenOptions o;
  o.flow.probe_interval = 50ms;
  o.listener_key = std::move(key);
  return o;
}

DialOptions dial_opts(const Listener& l, std::vector<std::uint8_t> key, int paths = 1,
                      const std::string& transport = "tcp") {
  DialOptions o;
  o.probe_interval = 50ms;
  o.listener_key = std::move(key);
  for (int i = 0; i < paths; ++i) {
    PathSpec p;
    p.transport = transport;
    p.address = l.local_address();
    p.name = "p" + std::to_string(i);
    o.paths.push_back(p);
  }
  return o;
}

void echo_once(Conn& c, Listener& l) {
  auto s = l.accept(deadline_in(5s));
  REQUIRE_OK(s);
  const std::string ping = "ping";
  REQUIRE_OK(c.write(std::as_bytes(std::span(ping))));
  std::array<std::byte, 4> in{};
  REQUIRE_OK((*s)->read(in, deadline_in(5s)));
  CHECK(std::memcmp(in.data(), ping.data(), 4) == 0);
}

// raw_exchange sends |frame| (framed) on a fresh TCP carrier and returns whether the listener
// answered with anything before closing (|bound| at most).
bool raw_answered(std::uint16_t port, std::span<const std::byte> frame) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::vector<std::byte> out;
  engine::append_stream_prefix(frame.size(), out);
  out.insert(out.end(), frame.begin(), frame.end());
  REQUIRE(::send(fd, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size()));
  pollfd p{fd, POLLIN, 0};
  bool answered = false;
  if (::poll(&p, 1, 5000) > 0) {
    char b[256];
    answered = ::recv(fd, b, sizeof b, 0) > 0;
  }
  ::close(fd);
  return answered;
}

}  // namespace

TEST_CASE("engine listener key: a keyed listener takes its dialers and refuses strangers "
          "before making a flow",
          "[engine][listener][key]") {
  const auto key = key_of(1);
  auto l = listen_tcp("127.0.0.1:0", keyed_listener(key));
  REQUIRE_OK(l);

  SECTION("with the key, over two paths") {
    auto d = Dialer::create(dial_opts(**l, key, 2));
    REQUIRE_OK(d);
    auto c = (*d)->dial(deadline_in(10s));
    REQUIRE_OK(c);
    echo_once(**c, **l);
    const auto st = (*c)->stats();
    CHECK((st.peer_caps & engine::kCapsKeyed) != 0);  // the listener checked the key
    CHECK(st.paths.size() == 2);
    const auto ls = (*l)->listener_stats();
    CHECK(ls.key_missing + ls.key_bad + ls.key_stale + ls.key_replayed == 0);
  }
  SECTION("without a key or with another key: no flow, counted") {
    DialOptions none = dial_opts(**l, {});
    auto d = Dialer::create(none);
    REQUIRE_OK(d);
    CHECK_FALSE((*d)->dial(deadline_in(3s)).ok());
    auto d2 = Dialer::create(dial_opts(**l, key_of(2)));
    REQUIRE_OK(d2);
    CHECK_FALSE((*d2)->dial(deadline_in(3s)).ok());
    const auto ls = (*l)->listener_stats();
    CHECK(ls.key_missing >= 1);
    CHECK(ls.key_bad >= 1);
    CHECK(ls.flows == 0);
    CHECK((*l)->flow_ids().empty());
  }
  SECTION("a recorded HELLO replayed on a new carrier is refused") {
    engine::Hello h;
    h.flow_id[0] = 9;
    h.instance_id[0] = 8;
    const auto unix_now = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::system_clock::now().time_since_epoch());
    auto sealed = engine::seal_first_frame(h, key, static_cast<std::uint32_t>(unix_now.count()),
                                           {0, 0, 0, 0, 0, 0, 0, 1});
    REQUIRE_OK(sealed);
    CHECK(raw_answered((*l)->port(), *sealed));  // HELLO_ACK
    CHECK((*l)->flow_ids().size() == 1);
    CHECK_FALSE(raw_answered((*l)->port(), *sealed));
    CHECK((*l)->listener_stats().key_replayed == 1);
    CHECK((*l)->flow_ids().size() == 1);
  }
}

TEST_CASE("engine listener key: udpflow with the key and a keyed dialer against an unkeyed "
          "listener",
          "[engine][listener][key]") {
  const auto key = key_of(3);
  {
    auto l = listen_udpflow("127.0.0.1:0", keyed_listener(key));
    REQUIRE_OK(l);
    auto d = Dialer::create(dial_opts(**l, key, 2, "udpflow"));
    REQUIRE_OK(d);
    auto c = (*d)->dial(deadline_in(10s));
    REQUIRE_OK(c);
    echo_once(**c, **l);
    auto none = Dialer::create(dial_opts(**l, {}, 1, "udpflow"));
    REQUIRE_OK(none);
    CHECK_FALSE((*none)->dial(deadline_in(1s)).ok());
    CHECK((*l)->listener_stats().key_missing >= 1);
    CHECK((*l)->flow_ids().empty());  // the echoed flow ended with its Conn; no stranger's
  }
  ListenOptions plain;
  plain.flow.probe_interval = 50ms;
  auto l = listen_tcp("127.0.0.1:0", plain);
  REQUIRE_OK(l);
  auto d = Dialer::create(dial_opts(**l, key, 2));
  REQUIRE_OK(d);
  auto c = (*d)->dial(deadline_in(10s));
  REQUIRE_OK(c);
  echo_once(**c, **l);
  CHECK(((*c)->stats().peer_caps & engine::kCapsKeyed) == 0);  // nobody checked the key
}

TEST_CASE("engine listener key: bad key settings are refused", "[engine][listener][key]") {
  ListenOptions o;
  o.listener_key = std::vector<std::uint8_t>(15, 1);
  CHECK_FALSE(listen_tcp("127.0.0.1:0", o).ok());
  o.listener_key = std::vector<std::uint8_t>(16, 1);
  o.key_max_skew = 0s;
  CHECK_FALSE(listen_tcp("127.0.0.1:0", o).ok());
  DialOptions d;
  d.listener_key = std::vector<std::uint8_t>(65, 1);
  PathSpec p;
  p.transport = "tcp";
  p.address = "127.0.0.1:1";
  d.paths = {p};
  CHECK_FALSE(Dialer::create(d).ok());
}
