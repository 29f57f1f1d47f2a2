// SPDX-License-Identifier: Apache-2.0
// A server-side FlowCore fed hand-made bytes, as a hostile or broken peer would send them:
// malformed frames, a far-ahead SEQ, a foreign version, ACKs for frames never sent. The core
// must reject them with a clear reason, never crash, and never corrupt the delivered stream.
#include "fake_net.hpp"

#include <rendr/common/bytes.hpp>
#include <rendr/engine/core/flow.hpp>
#include <rendr/engine/core/frame_cache.hpp>
#include <rendr/engine/core/wire.hpp>
#include <rendr/engine/errors.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

const TimePoint t0 = TimePoint{} + 1h;

FlowConfig small_config() {
  FlowConfig c;
  c.reorder_max_frames = 64;
  c.reorder_max_bytes = 64 * 1024;
  return c;
}

struct Server {
  FlowCore core;
  PathId stream_path = 0;
};

Server make_server(Framing framing = Framing::stream, FlowConfig cfg = small_config()) {
  Hello h;
  h.flow_id = make_id(1);
  h.instance_id = make_id(2);
  auto s = FlowCore::server(cfg, h, make_id(3), PathOptions{framing, "p1"}, t0);
  REQUIRE(s.ok());
  const PathId p = s->path_ids().front();
  return Server{std::move(s).value(), p};
}

std::vector<std::byte> framed(const Frame& f, bool prefix = true) {
  std::vector<std::byte> frame;
  REQUIRE(encode_frame(f, frame).ok());
  if (!prefix) {
    return frame;
  }
  std::vector<std::byte> out;
  append_stream_prefix(frame.size(), out);
  out.insert(out.end(), frame.begin(), frame.end());
  return out;
}

std::vector<std::byte> data_frame(std::uint64_t seq, const std::string& text, bool prefix = true) {
  return framed(Data{seq, as_bytes_of(text), false}, prefix);
}

std::string read_all(FlowCore& c) {
  std::string out;
  std::vector<std::byte> buf(1024);
  while (true) {
    auto r = c.read(buf, t0);
    if (!r.ok() || r->bytes == 0) {
      return out;
    }
    out.append(reinterpret_cast<const char*>(buf.data()), r->bytes);
  }
}

std::vector<FlowEvent> events(FlowCore& c) {
  std::vector<FlowEvent> v;
  while (auto e = c.poll_event()) {
    v.push_back(std::move(*e));
  }
  return v;
}

const EvPathDown* find_down(const std::vector<FlowEvent>& evs) {
  for (const auto& e : evs) {
    if (const auto* d = std::get_if<EvPathDown>(&e)) {
      return d;
    }
  }
  return nullptr;
}

}  // namespace

TEST_CASE("engine hostile: in-order, reordered and duplicate DATA give one clean stream",
          "[engine][hostile]") {
  auto s = make_server();
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(2, "world"), t0).ok());
  CHECK(s.core.readable() == 0);  // SEQ 1 missing: held in the reorder buffer
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(1, "hello "), t0).ok());
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(2, "world"), t0).ok());  // duplicate
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(1, "hello "), t0).ok());  // duplicate
  CHECK(read_all(s.core) == "hello world");
  const auto st = s.core.stats();
  CHECK(st.recv_dups == 2);
  CHECK(st.recv_next == 3);
  CHECK(st.recv_queue_hwm == 2);  // SEQ 2 waited, then 1 joined it before the drain
}

TEST_CASE("engine hostile: a frame beyond the reorder cap ends the flow with a clear error",
          "[engine][hostile][reorder]") {
  auto s = make_server();
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(1, "ok"), t0).ok());
  // Cap is 64 frames of distance from the next expected SEQ (2): 65 is the last allowed.
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(65, "edge"), t0).ok());
  CHECK(s.core.state() == FlowState::active);
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(66, "too far"), t0).ok());
  CHECK(s.core.state() == FlowState::dead);
  REQUIRE(s.core.close_error().has_value());
  CHECK(s.core.close_error()->code == make_error_code(errc::recv_window_exceeded));
  CHECK_THAT(s.core.close_error()->message(), Catch::Contains("64"));
  // What was delivered before stays intact and readable, then the error (not EOF).
  std::vector<std::byte> buf(16);
  auto r = s.core.read(buf, t0);
  REQUIRE(r.ok());
  CHECK(r->bytes == 2);
  auto r2 = s.core.read(buf, t0);
  REQUIRE_FALSE(r2.ok());
  CHECK(r2.error().code == make_error_code(errc::recv_window_exceeded));
}

TEST_CASE("engine hostile: the reorder byte cap holds too", "[engine][hostile][reorder]") {
  auto s = make_server();
  const std::string big(30 * 1024, 'x');
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(3, big), t0).ok());
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(4, big), t0).ok());
  CHECK(s.core.state() == FlowState::active);
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(5, big), t0).ok());  // 90 KiB > 64 KiB
  CHECK(s.core.state() == FlowState::dead);
  CHECK(s.core.close_error()->code == make_error_code(errc::recv_window_exceeded));
}

TEST_CASE("engine hostile: garbage on a stream path drops that path, the flow lives on",
          "[engine][hostile][malformed]") {
  auto s = make_server();
  BridgeTag tag;
  tag.bridge_id = make_id(1);
  tag.instance_id = make_id(2);
  tag.expected_peer_instance_id = make_id(3);
  auto p2 = s.core.accept_bridge(tag, PathOptions{Framing::stream, "p2"}, t0);
  REQUIRE(p2.ok());
  (void)events(s.core);
  // A frame with an unknown control code, properly length-prefixed.
  const std::vector<std::byte> junk = {std::byte{0}, std::byte{8}, std::byte{0x20},
                                       std::byte{0x0f}, std::byte{0}, std::byte{0},
                                       std::byte{0}, std::byte{0}, std::byte{0}, std::byte{0}};
  REQUIRE(s.core.on_receive(s.stream_path, junk, t0).ok());
  const auto evs = events(s.core);
  const auto* down = find_down(evs);
  REQUIRE(down != nullptr);
  CHECK(down->path == s.stream_path);
  CHECK(down->reason.code == make_error_code(errc::unknown_control));
  CHECK_THAT(down->reason.message(), Catch::Contains("0x0f"));
  CHECK(s.core.state() == FlowState::active);
  CHECK(s.core.active_path() == *p2);
  CHECK(s.core.stats().malformed_frames == 1);
  // Data keeps flowing on the surviving path.
  REQUIRE(s.core.on_receive(*p2, data_frame(1, "still here"), t0).ok());
  CHECK(read_all(s.core) == "still here");
  // Bytes for the dropped path are refused as unknown.
  auto late = s.core.on_receive(s.stream_path, data_frame(2, "x"), t0);
  REQUIRE_FALSE(late.ok());
  CHECK(late.error().code == make_error_code(errc::unknown_path));
}

TEST_CASE("engine hostile: a zero length prefix desynchronises only its own carrier",
          "[engine][hostile][malformed]") {
  auto s = make_server();
  std::vector<std::byte> bytes = data_frame(1, "abc");
  bytes.push_back(std::byte{0});
  bytes.push_back(std::byte{0});  // length 0
  auto more = data_frame(2, "def");
  bytes.insert(bytes.end(), more.begin(), more.end());
  REQUIRE(s.core.on_receive(s.stream_path, bytes, t0).ok());
  CHECK(read_all(s.core) == "abc");  // the good frame before the damage was delivered
  const auto evs = events(s.core);
  const auto* down = find_down(evs);
  REQUIRE(down != nullptr);
  CHECK(down->reason.code == make_error_code(errc::frame_too_large));
  // The only path is gone: the flow waits for a new one (migrating), it is not dead.
  CHECK(s.core.state() == FlowState::migrating);
}

TEST_CASE("engine hostile: a bad datagram is dropped and counted, the path stays",
          "[engine][hostile][malformed]") {
  auto s = make_server(Framing::datagram);
  const std::vector<std::byte> junk(5, std::byte{0xff});
  REQUIRE(s.core.on_receive(s.stream_path, junk, t0).ok());
  REQUIRE(s.core.on_receive(s.stream_path, data_frame(1, "fine", false), t0).ok());
  CHECK(read_all(s.core) == "fine");
  const auto evs = events(s.core);
  CHECK(find_down(evs) == nullptr);
  CHECK(s.core.stats().malformed_frames == 1);
  CHECK(s.core.state() == FlowState::active);
}

TEST_CASE("engine hostile: another wire version on a stream ends the flow (peer_proto_version)",
          "[engine][hostile][version]") {
  auto s = make_server();
  auto f = data_frame(1, "v1");
  f[2] = std::byte{0x40};  // VER = 1 in header byte 0 (after the 2-byte prefix)
  REQUIRE(s.core.on_receive(s.stream_path, f, t0).ok());
  CHECK(s.core.state() == FlowState::dead);
  REQUIRE(s.core.close_error().has_value());
  CHECK(s.core.close_error()->code == make_error_code(errc::peer_proto_version));
}

TEST_CASE("engine hostile: ACKs for frames never sent are ignored", "[engine][hostile][ack]") {
  auto s = make_server();
  REQUIRE(s.core.write(as_bytes_of("abc"), t0).ok());
  REQUIRE(s.core.on_receive(s.stream_path, framed(Ack{100}), t0).ok());
  auto st = s.core.stats();
  CHECK(st.ignored_acks == 1);
  CHECK(st.ack_next == 1);
  CHECK(st.ledger_frames == 1);  // still held for replay
  REQUIRE(s.core.on_receive(s.stream_path, framed(Ack{2}), t0).ok());
  st = s.core.stats();
  CHECK(st.ack_next == 2);
  CHECK(st.ledger_frames == 0);
}

TEST_CASE("engine hostile: a probe flood does not grow the queue without bound",
          "[engine][hostile][probe]") {
  auto s = make_server();
  std::vector<std::byte> flood;
  for (std::uint64_t i = 0; i < 10000; ++i) {
    auto f = framed(Probe{i, i});
    flood.insert(flood.end(), f.begin(), f.end());
  }
  REQUIRE(s.core.on_receive(s.stream_path, flood, t0).ok());
  const auto st = s.core.stats();
  REQUIRE(st.paths.size() == 1);
  CHECK(st.paths[0].queued_frames <= 64);
}

TEST_CASE("engine hostile: BRIDGE_TAG for another flow or instance is refused",
          "[engine][hostile][bridge]") {
  auto s = make_server();
  BridgeTag other;
  other.bridge_id = make_id(9);
  other.instance_id = make_id(2);
  other.expected_peer_instance_id = make_id(3);
  auto r1 = s.core.accept_bridge(other, {}, t0);
  REQUIRE_FALSE(r1.ok());
  CHECK(r1.error().code == make_error_code(errc::flow_mismatch));
  BridgeTag wrong_instance = other;
  wrong_instance.bridge_id = make_id(1);
  wrong_instance.expected_peer_instance_id = make_id(4);
  auto r2 = s.core.accept_bridge(wrong_instance, {}, t0);
  REQUIRE_FALSE(r2.ok());
  CHECK(r2.error().code == make_error_code(errc::instance_mismatch));
  CHECK(s.core.path_ids().size() == 1);
}

TEST_CASE("engine hostile: peer BYE reasons map to errors, only normal is EOF",
          "[engine][hostile][bye]") {
  struct Case {
    ByeReason reason;
    std::optional<errc> code;
  };
  for (const Case c : {Case{ByeReason::normal, std::nullopt},
                       Case{ByeReason::migration_budget, errc::migration_budget_exceeded},
                       Case{ByeReason::zombie, errc::zombie},
                       Case{ByeReason::proto_version, errc::peer_proto_version},
                       Case{ByeReason::app_request, errc::peer_closed}}) {
    INFO(static_cast<int>(c.reason));
    auto s = make_server();
    std::vector<std::byte> in = data_frame(1, "last words");
    auto bye = framed(Bye{2, c.reason});
    in.insert(in.end(), bye.begin(), bye.end());
    REQUIRE(s.core.on_receive(s.stream_path, in, t0).ok());
    CHECK(s.core.state() == FlowState::dead);
    CHECK(read_all(s.core) == "last words");  // data before the BYE comes first
    std::vector<std::byte> buf(8);
    auto r = s.core.read(buf, t0);
    if (c.code) {
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == make_error_code(*c.code));
    } else {
      REQUIRE(r.ok());
      CHECK(r->eof);
    }
  }
}

TEST_CASE("engine receive chunks: reads of any size give one stream, lent views outlive chunks",
          "[engine][hostile][chunks]") {
  FlowConfig cfg;  // default bounds: the whole stream may sit unread
  auto s = make_server(Framing::stream, cfg);
  // 300 DATA frames of 1 .. 32 768 bytes, each byte a function of its stream offset.
  std::vector<std::byte> wire;
  std::vector<std::byte> expect;
  std::vector<std::size_t> ends;  // frame boundaries in |wire|
  std::uint32_t x = 12345;
  const auto next = [&x] {
    x = x * 1103515245U + 12345U;
    return x >> 8;
  };
  for (std::uint64_t seq = 1; seq <= 300; ++seq) {
    const std::size_t len = seq % 7 == 0 ? kMaxPayload : 1 + next() % kMaxPayload;
    std::vector<std::byte> payload(len);
    for (auto& b : payload) {
      b = static_cast<std::byte>((expect.size() + static_cast<std::size_t>(&b - payload.data())) * 31U);
    }
    expect.insert(expect.end(), payload.begin(), payload.end());
    auto f = framed(Data{seq, payload, false});
    wire.insert(wire.end(), f.begin(), f.end());
    ends.push_back(wire.size());
  }
  std::vector<std::byte> got;
  std::vector<std::vector<BufferLoan>> held;  // loans kept across later reads and chunk changes
  std::vector<const void*> chunks;
  std::size_t views = 0;
  std::vector<std::byte> out(40'000);
  const auto drain_held = [&] {
    for (auto& ls : held) {
      for (const auto& l : ls) {
        const auto b = l.bytes();
        got.insert(got.end(), b.begin(), b.end());
      }
      s.core.recycle(ls);
    }
    held.clear();
  };
  std::size_t fed = 0;
  int round = 0;
  while (fed < wire.size()) {
    auto sp = s.core.recv_space(s.stream_path);
    REQUIRE_FALSE(sp.space.empty());
    if (chunks.empty() || chunks.back() != sp.hold.get()) {
      chunks.push_back(sp.hold.get());
    }
    std::size_t want = 1 + next() % 70'000;
    if (round % 3 == 0) {
      // Up to a frame boundary: the chunk is then fully parsed while loans still view it.
      want = *std::upper_bound(ends.begin(), ends.end(), fed) - fed;
    }
    const std::size_t n = std::min({sp.space.size(), wire.size() - fed, want});
    std::copy_n(wire.begin() + static_cast<std::ptrdiff_t>(fed), n, sp.space.begin());
    sp = RecvSpace{};  // like a carrier read that completed
    REQUIRE(s.core.on_received(s.stream_path, n, t0).ok());
    fed += n;
    // Every other round, lend what arrived and keep the loans a while before copying them.
    if (++round % 2 == 0) {
      std::vector<BufferLoan> loans;
      auto r = s.core.read_loan(out, loans, t0);
      REQUIRE(r.ok());
      for (const auto& l : loans) {
        views += l.shared ? 1 : 0;
      }
      // Pieces that did not fit whole were copied to out after the loans: keep them in order.
      std::size_t lent = 0;
      for (const auto& l : loans) {
        lent += l.bytes().size();
      }
      if (lent < r->bytes) {
        BufferLoan tail;
        tail.buf.assign(out.begin() + static_cast<std::ptrdiff_t>(lent),
                        out.begin() + static_cast<std::ptrdiff_t>(r->bytes));
        loans.push_back(std::move(tail));
      }
      held.push_back(std::move(loans));
      if (held.size() > 6) {
        drain_held();
      }
    }
  }
  drain_held();
  for (;;) {
    auto r = s.core.read(out, t0);
    REQUIRE(r.ok());
    if (r->bytes == 0) {
      break;
    }
    got.insert(got.end(), out.begin(), out.begin() + static_cast<std::ptrdiff_t>(r->bytes));
  }
  REQUIRE(got.size() == expect.size());
  CHECK(got == expect);
  CHECK(chunks.size() > 3);  // the stream crossed several chunks
  CHECK(views > 100);        // and its payloads were lent where they were read, not copied
  CHECK(s.core.stats().malformed_frames == 0);
}

TEST_CASE("engine receive chunks: on_received refuses what recv_space did not offer",
          "[engine][hostile][chunks]") {
  auto s = make_server();
  auto sp = s.core.recv_space(s.stream_path);
  REQUIRE_FALSE(sp.space.empty());
  auto too_much = s.core.on_received(s.stream_path, sp.space.size() + 1, t0);
  REQUIRE_FALSE(too_much.ok());
  CHECK(too_much.error().code == std::make_error_code(std::errc::invalid_argument));
  auto unknown = s.core.on_received(s.stream_path + 100, 1, t0);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().code == make_error_code(errc::unknown_path));
  CHECK(s.core.recv_space(s.stream_path + 100).space.empty());

  auto d = make_server(Framing::datagram);
  CHECK(d.core.recv_space(d.stream_path).space.empty());  // datagrams come one by one
  CHECK_FALSE(d.core.on_received(d.stream_path, 1, t0).ok());
}

TEST_CASE("engine receive chunks: release_recv_space lets go only of chunks nothing needs",
          "[engine][hostile][chunks]") {
  auto s = make_server();
  const PathId p = s.stream_path;
  CHECK_FALSE(s.core.release_recv_space(p));  // none yet
  // feed copies |bytes| into the path's chunk as a carrier read would.
  auto feed = [&](std::span<const std::byte> bytes) {
    auto sp = s.core.recv_space(p);
    REQUIRE(sp.space.size() >= bytes.size());
    std::copy(bytes.begin(), bytes.end(), sp.space.begin());
    sp.hold.reset();
    REQUIRE(s.core.on_received(p, bytes.size(), t0).ok());
  };
  const auto probe = framed(Probe{1, 1});
  feed(std::span(probe).first(3));  // a partial frame waits in the chunk
  CHECK(s.core.stats().recv_chunk_bytes > 0);
  CHECK_FALSE(s.core.release_recv_space(p));
  feed(std::span(probe).subspan(3));
  CHECK(s.core.release_recv_space(p));  // whole frames only, nothing viewed
  CHECK(s.core.stats().recv_chunk_bytes == 0);
  // A payload still unread views its chunk: kept (and filled further) until it is read.
  feed(data_frame(1, "held"));
  CHECK_FALSE(s.core.release_recv_space(p));
  CHECK(read_all(s.core) == "held");
  CHECK(s.core.release_recv_space(p));
  CHECK(s.core.stats().recv_chunk_bytes == 0);
  // The next read takes a fresh chunk.
  feed(data_frame(2, " again"));
  CHECK(read_all(s.core) == " again");
  CHECK(s.core.release_recv_space(p + 100) == false);
}

TEST_CASE("engine receive chunks: a little DATA among much else cannot pin chunk memory",
          "[engine][hostile][chunks][memory]") {
  FlowConfig cfg = small_config();
  cfg.recv_window_bytes = 64 * 1024;
  auto s = make_server(Framing::stream, cfg);
  // Each round: one 1-byte DATA frame in order, then 224 KiB of duplicates of frame 1 (dropped
  // on arrival). Viewed in place, each byte would keep a whole receive chunk alive.
  const std::vector<std::byte> big(kMaxPayload, std::byte{0x55});
  const auto dup = framed(Data{1, big, false});
  std::string expect;
  for (std::uint64_t seq = 1; seq <= 200; ++seq) {
    const std::string one(1, static_cast<char>('a' + seq % 26));
    expect += one;
    std::vector<std::byte> round = data_frame(seq, one);
    for (int i = 0; i < 7; ++i) {
      round.insert(round.end(), dup.begin(), dup.end());
    }
    REQUIRE(s.core.on_receive(s.stream_path, round, t0).ok());
  }
  const auto st = s.core.stats();
  CHECK(st.state == FlowState::active);
  CHECK(st.delivered_unread == 200);
  CHECK(st.recv_dups >= 7 * 199);
  // Bounded by the receive bounds (window + reorder bytes), plus the chunks being read into.
  constexpr std::size_t kChunk = rendr::engine::detail::FrameCache::kChunkSize;
  CHECK(st.recv_chunk_bytes <= cfg.recv_window_bytes + cfg.reorder_max_bytes + 2 * kChunk);
  CHECK(read_all(s.core) == expect);
  // Everything read: only the path's own chunk is left.
  CHECK(s.core.stats().recv_chunk_bytes <= kChunk);
}
