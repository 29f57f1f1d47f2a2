// SPDX-License-Identifier: Apache-2.0
#include "agent_oracle.hpp"

#include <rendr/agents/message.hpp>

#include <algorithm>
#include <cstdint>

namespace rendr::test {

using agents::FrameReader;
using agents::Message;
using agents::MsgType;
using agents::Tag;

namespace {

// touch makes every typed read the agent's handlers make on |m|.
void touch(const Message& m) {
  for (const auto& f : m.fields()) {
    (void)m.str(f.tag);
    (void)m.u64(f.tag);
    (void)m.strs(f.tag);
    (void)m.u64s(f.tag);
    (void)m.all(f.tag);
  }
  (void)agents::to_string(m.type());
  (void)agents::error_of(m, "fuzz").message();
}

std::string check_one(std::span<const std::byte> body) {
  auto m = Message::decode(body);
  if (!m) {
    return m.error().message().empty() ? "a decode error without a message" : "";
  }
  touch(*m);
  auto again = m->encode();
  if (!std::equal(again.begin(), again.end(), body.begin(), body.end())) {
    return "a decoded message re-encodes to other bytes";
  }
  return {};
}

}  // namespace

std::string check_agent_input(std::span<const std::byte> in) {
  if (in.empty()) {
    return {};
  }
  // The first byte chooses how the rest arrives on the agent channel: in pieces of 1..256 bytes.
  const std::size_t piece = static_cast<std::size_t>(std::to_integer<std::uint8_t>(in[0])) + 1;
  const auto rest = in.subspan(1);
  // Control socket: one datagram is one message.
  if (auto why = check_one(rest); !why.empty()) {
    return "datagram: " + why;
  }
  // Agent channel: a stream of frames, limited to 1 MiB as a small --max-frame-mib would.
  FrameReader fr(1U << 20);
  std::size_t off = 0;
  std::size_t got = 0;
  while (off < rest.size()) {
    const std::size_t n = std::min(piece, rest.size() - off);
    fr.feed(rest.subspan(off, n));
    off += n;
    for (;;) {
      if (fr.need() > (1U << 20)) {
        return "need() beyond the frame limit";
      }
      auto m = fr.next();
      if (!m) {
        return m.error().message().empty() ? "a frame error without a message" : "";
      }
      if (!m->has_value()) {
        break;
      }
      touch(**m);
      ++got;
    }
  }
  if (fr.buffered() > rest.size()) {
    return "the reader holds more than it was fed";
  }
  (void)got;
  return {};
}

std::vector<AgentSeed> agent_seeds() {
  std::vector<AgentSeed> out;
  auto add = [&out](std::string name, const Message& m) {
    std::vector<std::byte> b{std::byte{16}};
    auto f = m.encode_framed();
    b.insert(b.end(), f.begin(), f.end());
    out.push_back({std::move(name), std::move(b)});
  };
  add("hello", Message(MsgType::hello).add(Tag::name, "a").add(Tag::version, "1"));
  add("status", Message(MsgType::status));
  add("offer", Message(MsgType::offer)
                   .add_u64(Tag::mig, 42)
                   .add(Tag::service, "pat")
                   .add_u64(Tag::conn_id, 1)
                   .add(Tag::snapshot, std::vector<std::byte>(300, std::byte{0x5a}))
                   .add(Tag::state, "offset=1")
                   .add_u64(Tag::peer_ack, (1ULL << 48) | 12345));
  add("commit", Message(MsgType::commit).add_u64(Tag::mig, 42).add_u64(Tag::peer_ack, 0));
  add("steer", Message(MsgType::steer)
                   .add_u64(Tag::mig, 42)
                   .add(Tag::backend, "b")
                   .add(Tag::tuple, "10.99.0.1:8000->10.0.1.2:40000"));
  add("migrate", Message(MsgType::migrate).add(Tag::to, "b").add(Tag::service, "pat"));
  add("fail", agents::fail_msg(make_error(std::errc::timed_out, "slow")));
  // Broken: a length prefix far beyond the limit, and a truncated frame.
  out.push_back({"huge_prefix", {std::byte{3}, std::byte{0x10}, std::byte{0}, std::byte{0},
                                 std::byte{0}}});
  auto t = Message(MsgType::abort).add_u64(Tag::mig, 1).encode_framed();
  t.resize(t.size() - 3);
  t.insert(t.begin(), std::byte{0});
  out.push_back({"truncated", std::move(t)});
  return out;
}

}  // namespace rendr::test
