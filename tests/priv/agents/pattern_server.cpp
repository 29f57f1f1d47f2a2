// SPDX-License-Identifier: Apache-2.0
// Test server written against the embedder API (rendr/agents/embed.hpp): every connection gets
// an endless pattern stream (seed 1) and must send the pattern with seed 2, which is checked
// byte by byte. The app state that migrates with a connection is "<sent> <received>", the
// stream offsets. Any mismatch is fatal (exit 3), so a test sees a lost or duplicated byte.
//   pattern_server --agent SOCK --service NAME [--listen ADDR:PORT]... [--max-bytes N]
//                  [--end-quiet-on-export 1] [--no-untrack 1] [--export-delay-ms N]
// Test hooks: --end-quiet-on-export closes every connection whose client sent nothing yet when
// an export request names it, then answers "unknown connection" (a short connection finishing
// just as its batch asks for it); --no-untrack never tells the agent about closed connections;
// --export-delay-ms stalls the whole server N ms before it answers an export request.
// When its agent goes away the server serves on and registers again (tracking every connection
// it holds) once an agent answers at SOCK; it logs "agent lost (...)" and "agent back ...".
#include "support/pattern.hpp"

#include <rendr/agents/embed.hpp>
#include <rendr/common/endpoint.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace rendr;
using namespace rendr::agents;

namespace {

struct Conn {
  UniqueFd fd;
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
};

const test::Pattern kDown(1);
const test::Pattern kUp(2);
std::uint64_t g_max = ~0ULL;
bool g_end_quiet = false;
bool g_no_untrack = false;
int g_export_delay_ms = 0;

std::vector<std::byte> state_of(const Conn& c) {
  std::string s = std::to_string(c.sent) + " " + std::to_string(c.received);
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

void parse_state(Conn& c, const std::vector<std::byte>& st) {
  if (st.empty()) {  // a new connection the agent accepted for us (its userstack method)
    c.sent = 0;
    c.received = 0;
    return;
  }
  std::string s(reinterpret_cast<const char*>(st.data()), st.size());
  unsigned long long a = 0;
  unsigned long long b = 0;
  if (std::sscanf(s.c_str(), "%llu %llu", &a, &b) != 2) {
    std::fprintf(stderr, "pattern_server: bad state '%s'\n", s.c_str());
    std::exit(3);
  }
  c.sent = a;
  c.received = b;
}

void nonblock(int fd) { (void)::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::string agent;
  std::string service;
  std::vector<std::string> listens;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--agent") {
      agent = argv[i + 1];
    } else if (a == "--service") {
      service = argv[i + 1];
    } else if (a == "--listen") {
      listens.emplace_back(argv[i + 1]);
    } else if (a == "--max-bytes") {
      g_max = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (a == "--end-quiet-on-export") {
      g_end_quiet = std::string(argv[i + 1]) == "1";
    } else if (a == "--no-untrack") {
      g_no_untrack = std::string(argv[i + 1]) == "1";
    } else if (a == "--export-delay-ms") {
      g_export_delay_ms = std::atoi(argv[i + 1]);
    }
  }
  auto session = Session::connect(agent, service);
  if (!session) {
    std::fprintf(stderr, "pattern_server: %s\n", session.error().message().c_str());
    return 1;
  }
  std::vector<UniqueFd> listeners;
  for (const auto& l : listens) {
    auto ep = Endpoint::parse(l);
    if (!ep) {
      std::fprintf(stderr, "pattern_server: %s\n", ep.error().message().c_str());
      return 2;
    }
    UniqueFd s(::socket(ep->family == IpFamily::v6 ? AF_INET6 : AF_INET,
                        SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage ss{};
    socklen_t sl = ep->to_sockaddr(ss);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0 || ::listen(s.get(), 1024) != 0) {
      std::perror("pattern_server: bind/listen");
      return 1;
    }
    listeners.push_back(std::move(s));
  }
  std::printf("pattern_server ready\n");
  std::fflush(stdout);

  std::map<std::uint64_t, Conn> conns;
  std::vector<std::byte> buf(256 * 1024);
  for (;;) {
    std::vector<pollfd> pfds;
    pfds.push_back({session->fd(), POLLIN, 0});
    for (const auto& l : listeners) {
      pfds.push_back({l.get(), POLLIN, 0});
    }
    std::vector<std::uint64_t> ids;
    for (auto& [id, c] : conns) {
      short ev = POLLIN;
      if (c.sent < g_max) {
        ev |= POLLOUT;
      }
      pfds.push_back({c.fd.get(), ev, 0});
      ids.push_back(id);
    }
    // fd() is -1 while the agent is away (poll skips it); timeout_ms() says when the session
    // wants poll_event() again to register anew.
    const int st = session->timeout_ms();
    if (::poll(pfds.data(), pfds.size(), st < 0 || st > 1000 ? 1000 : st) < 0 && errno != EINTR) {
      std::perror("poll");
      return 1;
    }
    // Agent events first: an export must see the offsets before more I/O happens.
    const bool agent_io = (pfds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
    if (agent_io || session->timeout_ms() == 0) {
      for (;;) {
        auto ev = session->poll_event();
        if (!ev) {
          std::fprintf(stderr, "pattern_server: agent: %s\n", ev.error().message().c_str());
          return 1;
        }
        if (!*ev) {
          break;
        }
        if (auto* lost = std::get_if<Session::AgentLost>(&**ev)) {
          std::printf("pattern_server: agent lost (%s): serving %zu connections on, registering "
                      "again when an agent is back; exports returned %zu, frozen %zu, lost %zu\n",
                      lost->why.c_str(), conns.size(), lost->exports_returned,
                      lost->exports_frozen, lost->exports_lost);
          std::fflush(stdout);
        } else if (auto* back = std::get_if<Session::AgentBack>(&**ev)) {
          std::printf("pattern_server: agent back after %u attempts: service %s registered "
                      "again, %zu connections tracked, %zu frozen exports reclaimed\n",
                      back->attempts, service.c_str(), back->conns, back->reclaimed);
          std::fflush(stdout);
        } else if (auto* er = std::get_if<Session::ExportRequest>(&**ev)) {
          if (g_export_delay_ms > 0) {
            ::usleep(static_cast<useconds_t>(g_export_delay_ms) * 1000);
          }
          for (auto id : er->conn_ids) {
            auto it = conns.find(id);
            if (it != conns.end() && g_end_quiet && it->second.received == 0) {
              if (!g_no_untrack) {
                (void)session->untrack(id);
              }
              conns.erase(it);
              it = conns.end();
            }
            if (it == conns.end()) {
              (void)session->refuse_export(id, "unknown connection");
              continue;
            }
            if (auto x = session->export_conn(id, it->second.fd.get(), state_of(it->second));
                !x.ok()) {
              // Not handed over (the agent went away): the connection stays ours.
              std::fprintf(stderr, "pattern_server: export: %s\n", x.error().message().c_str());
              continue;
            }
            conns.erase(it);  // closes our fd; the agent holds the socket
          }
        } else if (auto* ad = std::get_if<Session::Adopt>(&**ev)) {
          Conn c;
          c.fd = std::move(ad->fd);
          parse_state(c, ad->state);
          nonblock(c.fd.get());
          conns[ad->conn_id] = std::move(c);
        } else if (auto* rt = std::get_if<Session::Returned>(&**ev)) {
          Conn c;
          c.fd = std::move(rt->fd);
          parse_state(c, rt->state);
          nonblock(c.fd.get());
          conns[rt->conn_id] = std::move(c);
        }
        // ExportDone: nothing to do; the connection left.
      }
      if (agent_io) {
        continue;  // poll again with the new set
      }
    }
    for (std::size_t li = 0; li < listeners.size(); ++li) {
      if ((pfds[1 + li].revents & POLLIN) == 0) {
        continue;
      }
      for (;;) {
        int fd = ::accept4(listeners[li].get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          break;
        }
        auto id = session->track(fd);
        if (!id) {
          std::fprintf(stderr, "pattern_server: track: %s\n", id.error().message().c_str());
          ::close(fd);
          continue;
        }
        Conn c;
        c.fd = UniqueFd(fd);
        conns[*id] = std::move(c);
      }
    }
    const std::size_t base = 1 + listeners.size();
    for (std::size_t k = 0; k < ids.size(); ++k) {
      auto it = conns.find(ids[k]);
      if (it == conns.end()) {
        continue;
      }
      Conn& c = it->second;
      short re = pfds[base + k].revents;
      bool close_it = false;
      if ((re & (POLLIN | POLLHUP | POLLERR)) != 0) {
        ssize_t n = ::read(c.fd.get(), buf.data(), buf.size());
        if (n > 0) {
          auto got = std::span(buf.data(), static_cast<std::size_t>(n));
          long long bad = kUp.mismatch(c.received, got);
          if (bad >= 0) {
            std::fprintf(stderr, "pattern_server: MISMATCH at upstream offset %llu\n",
                         static_cast<unsigned long long>(c.received + static_cast<std::uint64_t>(bad)));
            return 3;
          }
          c.received += static_cast<std::uint64_t>(n);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          close_it = true;
        }
      }
      if (!close_it && (re & POLLOUT) != 0 && c.sent < g_max) {
        std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), g_max - c.sent));
        kDown.fill(c.sent, std::span(buf.data(), want));
        ssize_t w = ::send(c.fd.get(), buf.data(), want, MSG_NOSIGNAL);
        if (w > 0) {
          c.sent += static_cast<std::uint64_t>(w);
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
          close_it = true;
        }
      }
      if (close_it) {
        if (!g_no_untrack) {
          (void)session->untrack(ids[k]);
        }
        conns.erase(it);
      }
    }
  }
}
