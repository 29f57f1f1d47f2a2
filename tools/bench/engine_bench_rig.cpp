// SPDX-License-Identifier: Apache-2.0
#include "engine_bench_rig.hpp"

#include "lab/lab_util.hpp"

#include <openssl/evp.h>
#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <thread>

namespace rendr::bench {

using Clock = std::chrono::steady_clock;

Result<std::unique_ptr<EngineRig>> EngineRig::create(const std::string& prefix,
                                                     lab::MultipathOptions opt) {
  (void)lab::remove_lab(prefix);
  auto l = lab::MultipathLab::create(prefix, opt);
  if (!l) {
    return std::move(l).take_error();
  }
  std::unique_ptr<EngineRig> r(new EngineRig());
  r->lab_ = std::move(*l);
  auto c = r->lab_->netns_fd("client");
  if (!c) {
    return std::move(c).take_error();
  }
  auto s = r->lab_->netns_fd("server");
  if (!s) {
    return std::move(s).take_error();
  }
  r->client_fd_ = std::move(*c);
  r->server_fd_ = std::move(*s);
  return r;
}

EngineRig::~EngineRig() = default;

Status EngineRig::in_client(const std::function<Status()>& f) {
  auto e = lab::NetnsEnter::enter(client_fd_.get());
  if (!e) {
    return std::move(e).take_error();
  }
  return f();
}

Status EngineRig::in_server(const std::function<Status()>& f) {
  auto e = lab::NetnsEnter::enter(server_fd_.get());
  if (!e) {
    return std::move(e).take_error();
  }
  return f();
}

Result<ListenerPtr> EngineRig::listen_tcp(ListenOptions o) {
  Result<ListenerPtr> out = make_error(std::errc::invalid_argument, "unset");
  auto st = in_server([&]() -> Status {
    out = rendr::listen_tcp("0.0.0.0:0", o);
    return {};
  });
  if (!st) {
    return std::move(st).take_error();
  }
  return out;
}

Result<ListenerPtr> EngineRig::listen_udpflow(ListenOptions o) {
  Result<ListenerPtr> out = make_error(std::errc::invalid_argument, "unset");
  auto st = in_server([&]() -> Status {
    out = rendr::listen_udpflow("0.0.0.0:0", o);
    return {};
  });
  if (!st) {
    return std::move(st).take_error();
  }
  return out;
}

PathSpec EngineRig::path(int i, std::uint16_t port, const std::string& transport) {
  PathSpec p;
  p.transport = transport;
  p.address = lab::MultipathLab::server_addr4(i) + ":" + std::to_string(port);
  p.name = "p" + std::to_string(i);
  return p;
}

Result<ConnPtr> EngineRig::dial(Dialer& d) {
  Result<ConnPtr> out = make_error(std::errc::invalid_argument, "unset");
  auto st = in_client([&]() -> Status {
    out = d.dial();
    return {};
  });
  if (!st) {
    return std::move(st).take_error();
  }
  return out;
}

Result<PathId> EngineRig::add_path(Conn& c, const PathSpec& spec) {
  Result<PathId> out = make_error(std::errc::invalid_argument, "unset");
  auto st = in_client([&]() -> Status {
    out = c.add_path(spec);
    return {};
  });
  if (!st) {
    return std::move(st).take_error();
  }
  return out;
}

namespace {

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::span<const std::byte> b) { EVP_DigestUpdate(ctx_, b.data(), b.size()); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static const char* kHex = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < len; ++i) {
      s.push_back(kHex[md[i] >> 4]);
      s.push_back(kHex[md[i] & 15]);
    }
    return s;
  }

 private:
  EVP_MD_CTX* ctx_;
};

double ms_since(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

TransferResult transfer(Conn& client, Conn& server, std::uint64_t total,
                        const std::function<void(std::uint64_t)>& on_progress, bool digest) {
  TransferResult res;
  constexpr std::size_t kChunk = 1U << 20;
  // Deterministic data: a fixed random block with each 64 KiB stamped with its offset, so lost,
  // duplicated or reordered ranges change the digest.
  std::vector<std::byte> block(kChunk);
  std::uint64_t x = 0x9E3779B97F4A7C15ULL;
  for (auto& b : block) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::byte>(x);
  }
  std::string write_error;
  std::string sha_sent;
  const auto start = Clock::now();
  CpuTime writer_cpu;
  const CpuTime reader_cpu0 = this_thread_cpu();
  std::thread writer([&] {
    (void)::pthread_setname_np(::pthread_self(), "bench-writer");
    const CpuTime cpu0 = this_thread_cpu();
    Sha256 sha;
    std::vector<std::byte> buf = block;
    std::uint64_t off = 0;
    while (off < total) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, total - off));
      for (std::size_t s = 0; s < n; s += 64 * 1024) {
        const std::uint64_t stamp = off + s;
        std::memcpy(buf.data() + s, &stamp, std::min<std::size_t>(8, n - s));
      }
      const std::span<const std::byte> chunk(buf.data(), n);
      if (digest) {
        sha.update(chunk);
      }
      auto st = client.write(chunk, deadline_in(std::chrono::seconds(60)));
      if (!st) {
        write_error = "write: " + st.error().message();
        return;
      }
      off += n;
      if (on_progress) {
        on_progress(off);
      }
    }
    sha_sent = sha.hex();
    auto st = client.close();
    if (!st) {
      write_error = "close: " + st.error().message();
    }
    writer_cpu = this_thread_cpu() - cpu0;
  });
  Sha256 sha;
  std::vector<std::byte> in(kChunk);
  std::optional<Clock::time_point> last;
  for (;;) {
    auto r = server.read_some(in, deadline_in(std::chrono::seconds(60)));
    const auto now = Clock::now();
    if (!r) {
      res.error = "read: " + r.error().message();
      break;
    }
    if (*r == 0) {
      break;
    }
    if (last) {
      res.max_gap_ms = std::max(res.max_gap_ms, ms_since(*last, now));
    }
    last = now;
    if (digest) {
      sha.update(std::span<const std::byte>(in.data(), *r));
    }
    res.bytes += *r;
  }
  res.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  res.reader_cpu = this_thread_cpu() - reader_cpu0;
  writer.join();
  res.writer_cpu = writer_cpu;
  res.sha_sent = sha_sent;
  res.sha_received = sha.hex();
  if (!write_error.empty()) {
    res.error = res.error.empty() ? write_error : res.error + "; writer: " + write_error;
  }
  if (res.error.empty() && res.bytes != total) {
    res.error = "received " + std::to_string(res.bytes) + " of " + std::to_string(total);
  }
  return res;
}

EchoResult echo(Conn& client, Conn& server, std::chrono::milliseconds interval, int count,
                const std::function<void(int)>& each, std::chrono::milliseconds timeout) {
  EchoResult res;
  std::thread srv([&] {
    std::byte m[16];
    for (;;) {
      auto r = server.read(m);
      if (!r || *r != sizeof m) {
        return;
      }
      if (!server.write(m)) {
        return;
      }
    }
  });
  const auto start = Clock::now();
  for (int i = 0; i < count; ++i) {
    if (each) {
      each(i);
    }
    std::this_thread::sleep_until(start + interval * i);  // the workload's pacing
    std::byte m[16] = {};
    const auto seq = static_cast<std::uint64_t>(i);
    std::memcpy(m, &seq, sizeof seq);
    const auto t0 = Clock::now();
    auto st = client.write(m, deadline_in(timeout));
    if (!st) {
      res.error = "echo write: " + st.error().message();
      res.lost = count - i;
      break;
    }
    std::byte back[16];
    auto r = client.read(back, deadline_in(timeout));
    if (!r || *r != sizeof back || std::memcmp(back, m, sizeof m) != 0) {
      res.error = r ? "echo reply mismatch" : "echo read: " + r.error().message();
      res.lost = count - i;
      break;
    }
    res.rtt_ms.push_back(ms_since(t0, Clock::now()));
  }
  (void)client.close();
  srv.join();
  return res;
}

G1Result g1(EngineRig& rig, Listener& from, const std::vector<PathSpec>& paths, std::uint64_t bytes,
            const std::function<void(const std::string&)>& progress) {
  G1Result out;
  for (int migrate = 0; migrate < 2; ++migrate) {
    progress(migrate ? "G1 with migrations" : "G1 baseline");
    DialOptions o;
    o.paths = paths;
    auto d = Dialer::create(std::move(o));
    if (!d) {
      out.error = "dialer: " + d.error().message();
      return out;
    }
    auto c = rig.dial(**d);
    if (!c) {
      out.error = "dial: " + c.error().message();
      return out;
    }
    auto s = from.accept(deadline_in(std::chrono::seconds(5)));
    if (!s) {
      out.error = "accept: " + s.error().message();
      return out;
    }
    Conn& conn = **c;
    int next = 0;
    auto res = transfer(conn, **s, bytes, [&](std::uint64_t written) {
      const double marks[] = {0.3, 0.5, 0.7};
      if (migrate && next < 3 &&
          written >= static_cast<std::uint64_t>(marks[next] * static_cast<double>(bytes))) {
        next += 1;
        for (const auto& path : conn.stats().paths) {
          if (!path.active) {
            (void)conn.migrate(path.id);
            break;
          }
        }
      }
    });
    if (!res.error.empty() || res.sha_sent != res.sha_received) {
      out.error =
          "G1 transfer: " + (res.error.empty() ? std::string("digest mismatch") : res.error);
      return out;
    }
    (migrate ? out.migrate_s : out.base_s) = res.seconds;
    if (migrate) {
      out.max_gap_ms = res.max_gap_ms;
    }
  }
  return out;
}

engine::FlowConfig lab_failover_config() {
  engine::FlowConfig c;
  c.probe_interval = std::chrono::milliseconds(50);
  c.fresh_min = std::chrono::milliseconds(150);
  c.fresh_max = std::chrono::seconds(1);
  return c;
}

}  // namespace rendr::bench
