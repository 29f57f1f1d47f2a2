// SPDX-License-Identifier: Apache-2.0
// The rendr-tun section of `rendrctl status` (tools/rendrctl/tun_status_reader.cpp) against
// rendr-tun's own status server (tools/rendr-tun/tun_status.cpp): the published socket names,
// the bounded read (a stale socket and a listener that never accepts become errors, not a
// hang), the JSON "tun" array and the text form. Hermetic: Unix sockets in a temp dir.
#include "rendrctl/engine_status.hpp"
#include "rendrctl/tun_status_reader.hpp"
#include "rendr-tun/tun_status.hpp"
#include "rendr-tun/tun_status_dir.hpp"

#include <rendr/engine/stats_json.hpp>

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

using namespace rendr;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/rendr-tunstatus-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { (void)std::system(("rm -rf " + path).c_str()); }
};

// bound_socket: a Unix stream socket bound at |path|; listening when |listen|.
UniqueFd bound_socket(const std::string& path, bool listen) {
  auto fd = UniqueFd::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd.ok());
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  REQUIRE(::bind(fd->get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0);
  if (listen) {
    REQUIRE(::listen(fd->get(), 4) == 0);
  }
  return std::move(*fd);
}

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

engine::L3Identity ident(std::uint8_t proto, const char* src, const char* dst) {
  auto id = engine::make_l3_identity(proto, src, dst);
  REQUIRE(id.ok());
  return *id;
}

}  // namespace

TEST_CASE("tun status: published names are tun-<pid>.sock and listed once each", "[tun][status]") {
  CHECK(tun::published_socket("/run/rendr/engine", 42) == "/run/rendr/engine/tun-42.sock");
  CHECK(tun::published_pid("tun-42.sock") == 42L);
  CHECK_FALSE(tun::published_pid("tun-.sock").has_value());
  CHECK_FALSE(tun::published_pid("tun-4x2.sock").has_value());
  CHECK_FALSE(tun::published_pid("tun-0.sock").has_value());
  CHECK_FALSE(tun::published_pid("42.json").has_value());
  CHECK_FALSE(tun::published_pid("tun-42.sock.tmp").has_value());
  TempDir d;
  for (const char* n : {"tun-12.sock", "tun-3.sock", "tun-x.sock", "5.json"}) {
    std::ofstream(d.path + "/" + n) << "";
  }
  const auto s = rendrctl::tun_sources(d.path, {"/tmp/other.sock", d.path + "/tun-12.sock"});
  REQUIRE(s.size() == 3);
  CHECK(s[0].pid == 3);
  CHECK(s[0].socket == d.path + "/tun-3.sock");
  CHECK(s[1].pid == 12);
  CHECK(s[2].socket == "/tmp/other.sock");
  CHECK(s[2].pid == 0);
  CHECK(rendrctl::tun_sources(d.path + "/missing", {}).empty());
}

TEST_CASE("tun status: a live rendr-tun answers and a stale or silent socket is an error",
          "[tun][status]") {
  TempDir d;
  // A stale socket (bound, its process gone: nobody listens) and a silent one (listening, never
  // accepting: a stopped process), both under published names.
  const std::string stale = tun::published_socket(d.path, 999991);
  (void)bound_socket(stale, false);
  REQUIRE(exists(stale));
  const std::string silent = tun::published_socket(d.path, 999992);
  const UniqueFd silent_fd = bound_socket(silent, true);
  tun::TunStatus st("ingress");
  REQUIRE(st.publish(d.path).ok());
  // publish removed the stale socket and left the listening one.
  CHECK_FALSE(exists(stale));
  CHECK(exists(silent));
  (void)bound_socket(stale, false);  // stale again, for the reader
  auto flow = st.add(ident(6, "10.77.0.1:40312", "198.18.0.10:8080"));
  flow->bytes_down = 5000;
  flow->state = "relaying";
  st.count("reset_flow_denied");
  const auto sources = rendrctl::tun_sources(d.path, {d.path + "/nothing.sock"});
  REQUIRE(sources.size() == 4);
  const auto t0 = std::chrono::steady_clock::now();
  const auto replies = rendrctl::read_tun_status(sources, 300);
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < std::chrono::seconds(5));  // bounded by the 300 ms, not by the silent socket
  REQUIRE(replies.size() == 4);
  const std::string me = tun::published_socket(d.path, ::getpid());
  int answered = 0;
  for (const auto& r : replies) {
    INFO(r.source.socket << ": " << r.error << " " << r.doc);
    if (r.source.socket == me) {
      ++answered;
      CHECK(r.error.empty());
      CHECK(json_scalar(r.doc, "role") == "ingress");
      CHECK(json_scalar(r.doc, "pid") == std::to_string(::getpid()));
    } else if (r.source.socket == stale) {
      CHECK(r.error.find("connection refused") == 0);
    } else if (r.source.socket == silent) {
      CHECK(r.error == "no answer within 300 ms (the process may be stopped or hung)");
    } else {
      CHECK(r.error == "no such socket");
    }
    if (!r.error.empty()) {
      CHECK(r.doc.empty());
    }
  }
  CHECK(answered == 1);
  // The JSON: one "tun" array, the document with "socket" in front, errors as objects.
  JsonWriter j;
  j.begin_object();
  rendrctl::tun_status_json(j, replies);
  j.end_object();
  const std::string js = j.str();
  INFO(js);
  CHECK(js.find("{\"tun\":[") == 0);
  CHECK(js.find("{\"socket\":\"" + me + "\",\"role\":\"ingress\",\"pid\":") != std::string::npos);
  CHECK(js.find("\"src\":\"10.77.0.1:40312\",\"dst\":\"198.18.0.10:8080\"") != std::string::npos);
  CHECK(js.find("{\"socket\":\"" + stale + "\",\"pid\":999991,\"error\":\"connection refused") !=
        std::string::npos);
  CHECK(js.find("{\"socket\":\"" + d.path + "/nothing.sock\",\"error\":\"no such socket\"}") !=
        std::string::npos);
  st.remove(flow);
}

TEST_CASE("tun status: the text form names role flows identity engine flow and paths",
          "[tun][status]") {
  tun::TunStatus st("egress");
  auto flow = st.add(ident(17, "10.88.0.1:40000", "198.18.0.10:5300"));
  flow->bytes_up = 1200;
  flow->bytes_down = 2500000;
  flow->state = "relaying";
  st.count("refused_flow_denied", 2);
  // The engine part as rendr-tun writes it for a live flow (engine::write_flow_stats).
  engine::FlowStats fs;
  fs.flow_id = engine::Id128{};
  fs.flow_id[0] = 0xab;
  fs.side = engine::Side::server;
  fs.state = engine::FlowState::active;
  fs.active_path = 2;
  engine::PathInfo p;
  p.id = 2;
  p.name = "p2";
  p.state = engine::PathState::ready;
  p.active = true;
  p.transport = "tcp";
  p.local = "10.89.0.2:7000";
  p.remote = "10.89.0.1:51000";
  p.bytes_tx = 2600000;
  fs.paths.push_back(p);
  std::string doc = st.json();
  const auto end = doc.rfind("}]}");
  REQUIRE(end != std::string::npos);
  doc.insert(end, ",\"engine\":" + engine::flow_stats_json(fs));
  rendrctl::TunReply ok{{"/run/rendr/engine/tun-7.sock", 7}, doc, {}};
  rendrctl::TunReply dead{{"/run/x.sock", 0},
                          {},
                          "no answer within 1000 ms (the process may be "
                          "stopped or hung)"};
  const std::string text = rendrctl::tun_status_text({ok, dead}, "/run/rendr/engine");
  INFO(text);
  CHECK(text.find("tun      pid " + std::to_string(::getpid()) +
                  " egress: 1 flow(s) (/run/rendr/engine/tun-7.sock)\n") == 0);
  CHECK(text.find("  counters flows=1 refused_flow_denied=2\n") != std::string::npos);
  CHECK(text.find("  egress udp 10.88.0.1:40000 -> 198.18.0.10:5300 relaying up 1.2 kB down "
                  "2.50 MB\n    flow ab000000000000000000000000000000 active active=2") !=
        std::string::npos);
  CHECK(text.find("      path 2 p2       tcp 10.89.0.2:7000->10.89.0.1:51000 ready (active)") !=
        std::string::npos);
  CHECK(text.find("tun      /run/x.sock: did not answer: no answer within 1000 ms") !=
        std::string::npos);
  CHECK(rendrctl::tun_status_text({}, "/d") ==
        "tun      no rendr-tun processes (none published "
        "in /d)\n");
  st.remove(flow);
}

TEST_CASE("rendrctl status text survives malformed numbers in a status document",
          "[tun][status]") {
  // A status socket given with --tun-status is read, not trusted: std::stod threw here and
  // aborted rendrctl.
  CHECK(rendrctl::human_bytes("2500000") == "2.50 MB");
  CHECK(rendrctl::human_bytes("") == "0 B");
  CHECK_NOTHROW(rendrctl::human_bytes("\"zz\""));
  CHECK(rendrctl::human_bytes("zz") == "? B");
  CHECK(rendrctl::human_bytes("1e999") == "? B");
  CHECK(rendrctl::human_bytes("12abc") == "? B");
  CHECK(rendrctl::rtt_text("350") == "0.35 ms");
  CHECK(rendrctl::rtt_text("null") == "-");
  CHECK(rendrctl::rtt_text("x") == "? ms");
}

TEST_CASE("rendrctl status text shows a flow's timer lateness and silence reprieves",
          "[tun][status]") {
  using namespace std::chrono_literals;
  rendr::engine::FlowStats s;
  s.timer_fired = 1234;
  s.timer_late_max = 312ms;
  s.timer_late_hist = {1000, 200, 20, 10, 4, 0};
  s.handler_max = 4500us;
  s.io_lock_wait_max = 2ms;
  s.silence_pending_reprieves = 3;
  s.silence_starved_reprieves = 1;
  const std::string js = rendr::engine::flow_stats_json(s);
  const std::string head = js.substr(0, js.find("\"paths\":"));
  CHECK(rendrctl::timer_line(head, "  ") ==
        "  timers fired 1234, late max 312.00 ms (<1/<5/<20/<100/<500/>=500 ms: "
        "1000,200,20,10,4,0), handler max 4.50 ms, lock wait max 2.00 ms, silence reprieves 3 "
        "pending / 1 starved\n");
  CHECK(rendrctl::timer_line("{\"flow_id\":\"ab\"", "  ").empty());  // an older writer
}
