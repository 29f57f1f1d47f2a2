// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/snapshot_codec.hpp>

#include <catch2/catch.hpp>

using namespace rendr;

namespace {

TcpSnapshot sample() {
  TcpSnapshot s;
  s.tuple.local = *Endpoint::parse("10.99.0.1:443");
  s.tuple.remote = *Endpoint::parse("10.0.1.2:51000");
  s.state = TcpState::established;
  s.send_seq = 0xFFFFFF00U;  // wraps inside the queue
  s.recv_seq = 12345;
  for (int i = 0; i < 3000; ++i) {
    s.send_queue.push_back(static_cast<std::byte>(i * 7));
  }
  s.send_unsent = 1000;
  s.recv_queue = {std::byte{1}, std::byte{2}, std::byte{3}};
  s.mss_clamp = 1460;
  s.opt_sack = true;
  s.opt_timestamps = true;
  s.opt_wscale = true;
  s.snd_wscale = 7;
  s.rcv_wscale = 9;
  s.timestamp = 987654;
  s.has_window = true;
  s.window = TcpWindow{1, 65535, 70000, 64000, 12345};
  s.options.nodelay = true;
  s.options.keepalive = true;
  s.options.keepidle = 60;
  s.options.keepintvl = 10;
  s.options.keepcnt = 5;
  s.options.congestion = "cubic";
  s.options.sndbuf = 46080;
  s.options.rcvbuf = 131072;
  s.options.mark = 7;
  s.options.ttl = 64;
  s.options.reuseaddr = true;
  return s;
}

}  // namespace

TEST_CASE("snapshot encodes and decodes to an equal value", "[common][codec]") {
  auto s = sample();
  auto bytes = encode_snapshot(s);
  auto back = decode_snapshot(bytes);
  REQUIRE(back.ok());
  CHECK(*back == s);
}

TEST_CASE("snapshot decoder rejects every truncation", "[common][codec]") {
  auto bytes = encode_snapshot(sample());
  for (std::size_t n = 0; n < bytes.size(); n += (n < 200 ? 1 : 97)) {
    auto r = decode_snapshot(std::span(bytes).first(n));
    INFO("length " << n);
    REQUIRE_FALSE(r.ok());
  }
}

TEST_CASE("snapshot decoder rejects every single-bit flip", "[common][codec]") {
  auto bytes = encode_snapshot(sample());
  for (std::size_t i = 0; i < bytes.size(); i += (i < 300 ? 1 : 131)) {
    for (int bit = 0; bit < 8; bit += 3) {
      auto copy = bytes;
      copy[i] ^= static_cast<std::byte>(1U << bit);
      auto r = decode_snapshot(copy);
      INFO("byte " << i << " bit " << bit);
      REQUIRE_FALSE(r.ok());
    }
  }
}

TEST_CASE("snapshot decoder names the problem", "[common][codec]") {
  auto bytes = encode_snapshot(sample());
  auto bad_magic = bytes;
  bad_magic[0] = std::byte{'X'};
  CHECK_THAT(decode_snapshot(bad_magic).error().message(), Catch::Contains("bad magic"));
  auto bad_version = bytes;
  bad_version[5] = std::byte{9};
  auto rv = decode_snapshot(bad_version);
  CHECK(rv.error().code == std::errc::not_supported);
  CHECK_THAT(rv.error().message(), Catch::Contains("version 9"));
  auto tampered = bytes;
  tampered[40] ^= std::byte{0x10};
  CHECK_THAT(decode_snapshot(tampered).error().message(), Catch::Contains("checksum"));
  auto longer = bytes;
  longer.push_back(std::byte{0});
  CHECK_THAT(decode_snapshot(longer).error().message(), Catch::Contains("trailing"));
}

TEST_CASE("snapshot validation rejects inconsistent values", "[common][codec]") {
  auto s = sample();
  s.send_unsent = 5000;
  CHECK_THAT(validate(s).error().message(), Catch::Contains("send_unsent"));
  s = sample();
  s.state = TcpState::listen;
  CHECK_THAT(validate(s).error().message(), Catch::Contains("LISTEN"));
  s = sample();
  s.state = TcpState::close_wait;  // peer_fin flag missing
  CHECK_THAT(validate(s).error().message(), Catch::Contains("peer_fin"));
  s = sample();
  s.tuple.remote = *Endpoint::parse("[fd00::1]:1");
  CHECK_THAT(validate(s).error().message(), Catch::Contains("families"));
  s = sample();
  s.options.congestion = "cu bic";
  CHECK_FALSE(validate(s).ok());
  // A valid but inconsistent snapshot is refused by the encoder's counterpart, too.
  s = sample();
  s.snd_wscale = 15;
  CHECK_FALSE(decode_snapshot(encode_snapshot(s)).ok());
}

TEST_CASE("snapshot JSON dump names the fields", "[common][codec]") {
  auto j = snapshot_to_json(sample());
  CHECK_THAT(j, Catch::Contains("\"local\":\"10.99.0.1:443\""));
  CHECK_THAT(j, Catch::Contains("\"state\":\"ESTABLISHED\""));
  CHECK_THAT(j, Catch::Contains("\"send_unsent\":1000"));
  CHECK_THAT(j, Catch::Contains("\"send_unacked\":2000"));
  CHECK_THAT(j, Catch::Contains("\"congestion\":\"cubic\""));
}
