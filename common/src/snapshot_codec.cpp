// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/snapshot_codec.hpp>

#include <rendr/common/bytes.hpp>
#include <rendr/common/crc32c.hpp>
#include <rendr/common/json.hpp>

#include <cstring>

namespace rendr {
namespace {

constexpr std::uint8_t kMagic[4] = {'R', 'S', 'N', 'P'};
constexpr std::size_t kMaxBody = 2 * TcpSnapshot::kMaxQueueBytes + 4096;

// flags1
constexpr std::uint8_t kFinQueued = 1U << 0;
constexpr std::uint8_t kFinSent = 1U << 1;
constexpr std::uint8_t kPeerFin = 1U << 2;
constexpr std::uint8_t kOptSack = 1U << 3;
constexpr std::uint8_t kOptTs = 1U << 4;
constexpr std::uint8_t kOptWscale = 1U << 5;
constexpr std::uint8_t kHasWindow = 1U << 6;
constexpr std::uint8_t kFlags1Known = 0x7F;
// flags2 (socket options)
constexpr std::uint8_t kNodelay = 1U << 0;
constexpr std::uint8_t kCork = 1U << 1;
constexpr std::uint8_t kKeepalive = 1U << 2;
constexpr std::uint8_t kLinger = 1U << 3;
constexpr std::uint8_t kV6only = 1U << 4;
constexpr std::uint8_t kNonblock = 1U << 5;
constexpr std::uint8_t kReuseaddr = 1U << 6;
constexpr std::uint8_t kFlags2Known = 0x7F;

void put_endpoint(ByteWriter& w, const Endpoint& e) {
  w.u8(static_cast<std::uint8_t>(e.family));
  w.bytes(std::as_bytes(std::span(e.addr)));
  w.u16(e.port);
  w.u32(e.scope_id);
}

bool get_endpoint(ByteReader& r, Endpoint& e) {
  std::uint8_t fam = 0;
  std::span<const std::byte> addr;
  if (!r.u8(fam) || !r.bytes(16, addr) || !r.u16(e.port) || !r.u32(e.scope_id)) {
    return false;
  }
  if (fam != 4 && fam != 6) {
    return false;
  }
  e.family = static_cast<IpFamily>(fam);
  std::memcpy(e.addr.data(), addr.data(), 16);
  return true;
}

Error bad(const std::string& what) {
  return make_error(std::errc::invalid_argument, "decode snapshot: " + what);
}

}  // namespace

std::vector<std::byte> encode_snapshot(const TcpSnapshot& s) {
  ByteWriter w;
  w.bytes(std::as_bytes(std::span(kMagic)));
  w.u16(TcpSnapshot::kVersion);
  w.u16(0);
  w.u32(0);  // body length, patched below
  const std::size_t body_start = w.size();

  w.u8(static_cast<std::uint8_t>(s.state));
  put_endpoint(w, s.tuple.local);
  put_endpoint(w, s.tuple.remote);
  w.u32(s.send_seq);
  w.u32(s.recv_seq);
  w.u32(s.send_unsent);
  std::uint8_t f1 = 0;
  f1 |= s.fin_queued ? kFinQueued : 0;
  f1 |= s.fin_sent ? kFinSent : 0;
  f1 |= s.peer_fin ? kPeerFin : 0;
  f1 |= s.opt_sack ? kOptSack : 0;
  f1 |= s.opt_timestamps ? kOptTs : 0;
  f1 |= s.opt_wscale ? kOptWscale : 0;
  f1 |= s.has_window ? kHasWindow : 0;
  w.u8(f1);
  w.u32(s.mss_clamp);
  w.u8(s.snd_wscale);
  w.u8(s.rcv_wscale);
  w.u32(s.timestamp);
  w.u32(s.window.snd_wl1);
  w.u32(s.window.snd_wnd);
  w.u32(s.window.max_window);
  w.u32(s.window.rcv_wnd);
  w.u32(s.window.rcv_wup);

  const auto& o = s.options;
  std::uint8_t f2 = 0;
  f2 |= o.nodelay ? kNodelay : 0;
  f2 |= o.cork ? kCork : 0;
  f2 |= o.keepalive ? kKeepalive : 0;
  f2 |= o.linger_on ? kLinger : 0;
  f2 |= o.v6only ? kV6only : 0;
  f2 |= o.nonblocking ? kNonblock : 0;
  f2 |= o.reuseaddr ? kReuseaddr : 0;
  w.u8(f2);
  for (std::uint32_t v : {o.keepidle, o.keepintvl, o.keepcnt, o.user_timeout, o.sndbuf, o.rcvbuf,
                          o.mark, o.tos, o.ttl, o.linger_secs, o.notsent_lowat}) {
    w.u32(v);
  }
  w.str(o.congestion);
  w.blob(s.send_queue);
  w.blob(s.recv_queue);

  w.patch_u32(8, static_cast<std::uint32_t>(w.size() - body_start));
  w.u32(crc32c(w.data()));
  return w.take();
}

Result<TcpSnapshot> decode_snapshot(std::span<const std::byte> data) {
  if (data.size() < kSnapshotHeaderSize + 4) {
    return bad("truncated: " + std::to_string(data.size()) + " bytes is shorter than a header");
  }
  if (std::memcmp(data.data(), kMagic, 4) != 0) {
    return bad("bad magic (not a rendr snapshot)");
  }
  ByteReader hr(data.subspan(4, kSnapshotHeaderSize - 4));
  std::uint16_t version = 0;
  std::uint16_t hflags = 0;
  std::uint32_t body_len = 0;
  (void)hr.u16(version);
  (void)hr.u16(hflags);
  (void)hr.u32(body_len);
  if (version != TcpSnapshot::kVersion) {
    return make_error(std::errc::not_supported,
                      "decode snapshot: version " + std::to_string(version) +
                          " is not supported (this build reads version " +
                          std::to_string(TcpSnapshot::kVersion) + ")");
  }
  if (hflags != 0) {
    return bad("unknown header flags " + std::to_string(hflags));
  }
  if (body_len > kMaxBody) {
    return bad("body length " + std::to_string(body_len) + " exceeds the maximum");
  }
  const std::size_t total = kSnapshotHeaderSize + std::size_t{body_len} + 4;
  if (data.size() < total) {
    return bad("truncated: have " + std::to_string(data.size()) + " bytes, header says " +
               std::to_string(total));
  }
  if (data.size() > total) {
    return bad("trailing bytes: have " + std::to_string(data.size()) + " bytes, header says " +
               std::to_string(total));
  }
  ByteReader cr(data.subspan(total - 4));
  std::uint32_t want_crc = 0;
  (void)cr.u32(want_crc);
  if (crc32c(data.first(total - 4)) != want_crc) {
    return bad("checksum mismatch (corrupted or tampered)");
  }

  ByteReader r(data.subspan(kSnapshotHeaderSize, body_len));
  TcpSnapshot s;
  std::uint8_t state = 0;
  std::uint8_t f1 = 0;
  std::uint8_t f2 = 0;
  if (!r.u8(state) || !get_endpoint(r, s.tuple.local) || !get_endpoint(r, s.tuple.remote) ||
      !r.u32(s.send_seq) || !r.u32(s.recv_seq) || !r.u32(s.send_unsent) || !r.u8(f1) ||
      !r.u32(s.mss_clamp) || !r.u8(s.snd_wscale) || !r.u8(s.rcv_wscale) || !r.u32(s.timestamp) ||
      !r.u32(s.window.snd_wl1) || !r.u32(s.window.snd_wnd) || !r.u32(s.window.max_window) ||
      !r.u32(s.window.rcv_wnd) || !r.u32(s.window.rcv_wup) || !r.u8(f2)) {
    return bad("body truncated or bad address family");
  }
  if ((f1 & ~kFlags1Known) != 0 || (f2 & ~kFlags2Known) != 0) {
    return bad("unknown flag bits");
  }
  s.state = static_cast<TcpState>(state);
  s.fin_queued = (f1 & kFinQueued) != 0;
  s.fin_sent = (f1 & kFinSent) != 0;
  s.peer_fin = (f1 & kPeerFin) != 0;
  s.opt_sack = (f1 & kOptSack) != 0;
  s.opt_timestamps = (f1 & kOptTs) != 0;
  s.opt_wscale = (f1 & kOptWscale) != 0;
  s.has_window = (f1 & kHasWindow) != 0;
  auto& o = s.options;
  o.nodelay = (f2 & kNodelay) != 0;
  o.cork = (f2 & kCork) != 0;
  o.keepalive = (f2 & kKeepalive) != 0;
  o.linger_on = (f2 & kLinger) != 0;
  o.v6only = (f2 & kV6only) != 0;
  o.nonblocking = (f2 & kNonblock) != 0;
  o.reuseaddr = (f2 & kReuseaddr) != 0;
  for (std::uint32_t* v : {&o.keepidle, &o.keepintvl, &o.keepcnt, &o.user_timeout, &o.sndbuf,
                           &o.rcvbuf, &o.mark, &o.tos, &o.ttl, &o.linger_secs, &o.notsent_lowat}) {
    if (!r.u32(*v)) {
      return bad("body truncated in socket options");
    }
  }
  std::span<const std::byte> cc;
  std::span<const std::byte> sq;
  std::span<const std::byte> rq;
  if (!r.blob(15, cc) || !r.blob(TcpSnapshot::kMaxQueueBytes, sq) ||
      !r.blob(TcpSnapshot::kMaxQueueBytes, rq)) {
    return bad("body truncated or oversized in congestion name or queues");
  }
  if (r.remaining() != 0) {
    return bad("body has " + std::to_string(r.remaining()) + " unexpected trailing bytes");
  }
  o.congestion.assign(reinterpret_cast<const char*>(cc.data()), cc.size());
  s.send_queue.assign(sq.begin(), sq.end());
  s.recv_queue.assign(rq.begin(), rq.end());
  if (auto v = validate(s); !v.ok()) {
    return std::move(v).take_error().with_context("decode snapshot");
  }
  return s;
}

std::string snapshot_to_json(const TcpSnapshot& s, bool full_queues) {
  JsonWriter j;
  auto queue = [&](std::string_view key, const std::vector<std::byte>& q) {
    j.begin_object(key);
    j.kv("bytes", static_cast<std::uint64_t>(q.size()));
    j.kv("crc32c", static_cast<std::uint64_t>(crc32c(q)));
    if (full_queues) {
      j.kv("hex", to_hex(q));
    } else {
      j.kv("head_hex", to_hex(std::span(q).first(std::min<std::size_t>(q.size(), 16))));
    }
    j.end_object();
  };
  j.begin_object();
  j.kv("version", static_cast<unsigned>(TcpSnapshot::kVersion));
  j.kv("local", s.tuple.local.to_string());
  j.kv("remote", s.tuple.remote.to_string());
  j.kv("family", s.tuple.local.family == IpFamily::v4 ? "ipv4" : "ipv6");
  j.kv("state", to_string(s.state));
  j.kv("send_seq", static_cast<std::uint64_t>(s.send_seq));
  j.kv("recv_seq", static_cast<std::uint64_t>(s.recv_seq));
  j.kv("send_unacked", static_cast<std::uint64_t>(s.send_unacked()));
  j.kv("send_unsent", static_cast<std::uint64_t>(s.send_unsent));
  queue("send_queue", s.send_queue);
  queue("recv_queue", s.recv_queue);
  j.kv("fin_queued", s.fin_queued);
  j.kv("fin_sent", s.fin_sent);
  j.kv("peer_fin", s.peer_fin);
  j.begin_object("tcp_options");
  j.kv("mss_clamp", static_cast<std::uint64_t>(s.mss_clamp));
  j.kv("sack", s.opt_sack);
  j.kv("timestamps", s.opt_timestamps);
  j.kv("window_scale", s.opt_wscale);
  j.kv("snd_wscale", static_cast<unsigned>(s.snd_wscale));
  j.kv("rcv_wscale", static_cast<unsigned>(s.rcv_wscale));
  j.kv("timestamp", static_cast<std::uint64_t>(s.timestamp));
  j.end_object();
  if (s.has_window) {
    j.begin_object("window");
    j.kv("snd_wl1", static_cast<std::uint64_t>(s.window.snd_wl1));
    j.kv("snd_wnd", static_cast<std::uint64_t>(s.window.snd_wnd));
    j.kv("max_window", static_cast<std::uint64_t>(s.window.max_window));
    j.kv("rcv_wnd", static_cast<std::uint64_t>(s.window.rcv_wnd));
    j.kv("rcv_wup", static_cast<std::uint64_t>(s.window.rcv_wup));
    j.end_object();
  } else {
    j.kv_null("window");
  }
  const auto& o = s.options;
  j.begin_object("socket_options");
  j.kv("nodelay", o.nodelay);
  j.kv("cork", o.cork);
  j.kv("keepalive", o.keepalive);
  j.kv("keepidle_s", static_cast<std::uint64_t>(o.keepidle));
  j.kv("keepintvl_s", static_cast<std::uint64_t>(o.keepintvl));
  j.kv("keepcnt", static_cast<std::uint64_t>(o.keepcnt));
  j.kv("user_timeout_ms", static_cast<std::uint64_t>(o.user_timeout));
  j.kv("congestion", o.congestion);
  j.kv("sndbuf", static_cast<std::uint64_t>(o.sndbuf));
  j.kv("rcvbuf", static_cast<std::uint64_t>(o.rcvbuf));
  j.kv("mark", static_cast<std::uint64_t>(o.mark));
  j.kv("tos", static_cast<std::uint64_t>(o.tos));
  j.kv("ttl", static_cast<std::uint64_t>(o.ttl));
  j.kv("linger", o.linger_on);
  j.kv("linger_s", static_cast<std::uint64_t>(o.linger_secs));
  j.kv("notsent_lowat", static_cast<std::uint64_t>(o.notsent_lowat));
  j.kv("v6only", o.v6only);
  j.kv("nonblocking", o.nonblocking);
  j.kv("reuseaddr", o.reuseaddr);
  j.end_object();
  j.end_object();
  return j.str();
}

}  // namespace rendr
