// SPDX-License-Identifier: Apache-2.0
// measure_quic_stream (engine_quic.hpp).
#include "engine_quic.hpp"

#include "rendrctl/cert.hpp"

#include <rendr/engine/stats_json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace rendr::bench {

namespace {

// Certs: a CA with a "server" and a "client" certificate in a temporary directory.
struct TempCerts {
  std::string dir;
  ~TempCerts() {
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  }
  Status make() {
    char tmpl[] = "/tmp/rendr-bench-quic-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      return errno_error("mkdtemp");
    }
    dir = tmpl;
    cert::InitOptions init;
    init.dir = dir;
    RENDR_TRY(cert::init_ca(init));
    for (const char* name : {"server", "client"}) {
      cert::IssueOptions is;
      is.dir = dir;
      is.name = name;
      RENDR_TRY(cert::issue(is));
    }
    return {};
  }
};

}  // namespace

QuicStreamResult measure_quic_stream(EngineRig& rig, std::uint64_t bytes, int runs,
                                     const std::function<void(const std::string&)>& progress) {
  QuicStreamResult out;
  TempCerts certs;
  if (auto st = certs.make(); !st) {
    out.error = "quic certificates: " + st.error().message();
    return out;
  }
  auto l = rig.listen_tcp(ListenOptions{});
  if (!l) {
    out.error = "listen: " + l.error().message();
    return out;
  }
  QuicTls tls{certs.dir + "/ca.pem", certs.dir + "/server.pem", certs.dir + "/server.key"};
  Result<std::string> qaddr = make_error(std::errc::invalid_argument, "unset");
  (void)rig.in_server([&]() -> Status {
    qaddr = (*l)->add_quic("0.0.0.0:0", tls);
    return {};
  });
  if (!qaddr) {
    out.error = "add_quic: " + qaddr.error().message();
    return out;
  }
  const auto qport = static_cast<std::uint16_t>(std::stoul(qaddr->substr(qaddr->rfind(':') + 1)));
  std::vector<double> tcp_s;
  std::vector<double> quic_s;
  std::vector<double> ratios;
  for (int i = 0; i < runs; ++i) {
    double one[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
      const bool quic = (k == 0) == (i % 2 == 0);  // even runs: quic first
      DialOptions o;
      PathSpec p = EngineRig::path(1, quic ? qport : (*l)->port(), quic ? "quic" : "tcp");
      if (quic) {
        p.opts = {{"ca", tls.ca},
                  {"cert", certs.dir + "/client.pem"},
                  {"key", certs.dir + "/client.key"},
                  {"server_name", "server"}};
      }
      o.paths = {p};
      auto d = Dialer::create(std::move(o));
      if (!d) {
        out.error = "dialer: " + d.error().message();
        return out;
      }
      auto c = rig.dial(**d);
      if (!c) {
        out.error = std::string(quic ? "quic" : "tcp") + " dial: " + c.error().message();
        return out;
      }
      auto s = (*l)->accept(deadline_in(std::chrono::seconds(5)));
      if (!s) {
        out.error = "accept: " + s.error().message();
        return out;
      }
      auto res = transfer(**c, **s, bytes, {}, false);
      if (!res.error.empty()) {
        out.error = std::string(quic ? "quic" : "tcp") + " transfer: " + res.error +
                    "\n  client: " + engine::flow_stats_json((*c)->stats()) +
                    "\n  server: " + engine::flow_stats_json((*s)->stats());
        return out;
      }
      one[quic ? 1 : 0] = res.seconds;
      (quic ? quic_s : tcp_s).push_back(res.seconds);
    }
    ratios.push_back(one[0] / one[1]);
    char line[200];
    std::snprintf(line, sizeof line, "quic stream run %d/%d: tcp %.0f MB/s, quic %.0f MB/s, ratio %.3f",
                  i + 1, runs, static_cast<double>(bytes) / one[0] / 1e6,
                  static_cast<double>(bytes) / one[1] / 1e6, one[0] / one[1]);
    progress(line);
  }
  out.tcp_mbps = static_cast<double>(bytes) / percentile(tcp_s, 50) / 1e6;
  out.quic_mbps = static_cast<double>(bytes) / percentile(quic_s, 50) / 1e6;
  out.ratio = percentile(ratios, 50);
  return out;
}

}  // namespace rendr::bench
