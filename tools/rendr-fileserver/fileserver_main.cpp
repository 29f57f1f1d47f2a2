// SPDX-License-Identifier: Apache-2.0
// rendr-fileserver: a small HTTP/1.1 file server written against the embedder API
// (rendr/agents/embed.hpp), the example server of the native-migration demo. Every response
// body is a file; the application state that migrates with a connection is
// "<path>\n<size>\n<offset>", so the server that adopts it continues the body at <offset>
// (the bytes already handed to the kernel travel inside the socket's queues). The file must
// exist at the same path on every host (the lab's namespaces share one filesystem).
#include <rendr/agents/embed.hpp>
#include <rendr/common/endpoint.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

constexpr const char* kUsage =
    "usage: rendr-fileserver --root DIR --listen ADDR:PORT [--listen ...]\n"
    "                        [--agent SOCK] [--service NAME]\n"
    "\n"
    "HTTP/1.1 file server (GET only) whose connections rendr-agent can migrate: it registers as\n"
    "SERVICE (default http) with the agent at SOCK (default /run/rendr/agent.sock), exports a\n"
    "connection with its file offset on request, and adopts connections migrated to this host.\n"
    "If the agent goes away, every connection is served on and the server registers again\n"
    "(tracking them all) once an agent answers at SOCK; it must be there at start.\n";

volatile std::sig_atomic_t g_stop = 0;

struct Conn {
  UniqueFd fd;
  std::string req;       // request bytes until the header ends
  std::string out;       // response header bytes not yet sent
  UniqueFd file;
  std::string path;
  std::uint64_t size = 0;
  std::uint64_t offset = 0;  // body bytes handed to the kernel
  std::uint64_t id = 0;      // agent conn id once tracked (after the header is out)
};

std::vector<std::byte> state_of(const Conn& c) {
  std::string s = c.path + "\n" + std::to_string(c.size) + "\n" + std::to_string(c.offset);
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

bool restore_state(Conn& c, const std::vector<std::byte>& st) {
  std::string s(reinterpret_cast<const char*>(st.data()), st.size());
  auto a = s.find('\n');
  auto b = s.find('\n', a + 1);
  if (a == std::string::npos || b == std::string::npos) {
    return false;
  }
  c.path = s.substr(0, a);
  c.size = std::strtoull(s.substr(a + 1, b - a - 1).c_str(), nullptr, 10);
  c.offset = std::strtoull(s.substr(b + 1).c_str(), nullptr, 10);
  c.file = UniqueFd(::open(c.path.c_str(), O_RDONLY | O_CLOEXEC));
  return c.file.valid();
}

void nonblock(int fd) { (void)::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGTERM, [](int) { g_stop = 1; });
  std::signal(SIGINT, [](int) { g_stop = 1; });
  std::string agent = "/run/rendr/agent.sock";
  std::string service = "http";
  std::string root;
  std::vector<std::string> listens;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "rendr-fileserver: option %s needs a value\n%s", a.c_str(), kUsage);
      return 2;
    }
    std::string v = argv[++i];
    if (a == "--agent") {
      agent = v;
    } else if (a == "--service") {
      service = v;
    } else if (a == "--root") {
      root = v;
    } else if (a == "--listen") {
      listens.push_back(v);
    } else {
      std::fprintf(stderr, "rendr-fileserver: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (root.empty() || listens.empty()) {
    std::fprintf(stderr, "rendr-fileserver: --root and --listen are required\n%s", kUsage);
    return 2;
  }
  auto session = Session::connect(agent, service);
  if (!session) {
    std::fprintf(stderr, "rendr-fileserver: %s\n", session.error().message().c_str());
    return 1;
  }
  std::vector<UniqueFd> listeners;
  for (const auto& l : listens) {
    auto ep = Endpoint::parse(l);
    if (!ep) {
      std::fprintf(stderr, "rendr-fileserver: --listen: %s\n", ep.error().message().c_str());
      return 2;
    }
    UniqueFd s(::socket(ep->family == IpFamily::v6 ? AF_INET6 : AF_INET,
                        SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage ss{};
    socklen_t sl = ep->to_sockaddr(ss);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0 || ::listen(s.get(), 128) != 0) {
      std::fprintf(stderr, "rendr-fileserver: listen %s: %s\n", l.c_str(), std::strerror(errno));
      return 1;
    }
    listeners.push_back(std::move(s));
  }
  std::printf("rendr-fileserver ready (service %s)\n", service.c_str());
  std::fflush(stdout);

  std::map<int, Conn> conns;  // by fd
  std::map<std::uint64_t, int> by_id;
  auto drop = [&](int fd) {
    auto it = conns.find(fd);
    if (it == conns.end()) {
      return;
    }
    if (it->second.id != 0) {
      (void)session->untrack(it->second.id);
      by_id.erase(it->second.id);
    }
    conns.erase(it);
  };
  auto adopt = [&](std::uint64_t id, UniqueFd fd, const std::vector<std::byte>& st) {
    Conn c;
    // An empty state is a new connection the agent accepted for us (its userstack method):
    // served from the request on, like one from our own listener, already tracked.
    if (!st.empty() && !restore_state(c, st)) {
      std::fprintf(stderr, "rendr-fileserver: cannot resume conn %llu (state/file)\n",
                   static_cast<unsigned long long>(id));
      return;
    }
    c.fd = std::move(fd);
    c.id = id;
    nonblock(c.fd.get());
    int k = c.fd.get();
    by_id[id] = k;
    conns[k] = std::move(c);
  };
  while (g_stop == 0) {
    std::vector<pollfd> p;
    p.push_back({session->fd(), POLLIN, 0});
    for (const auto& l : listeners) {
      p.push_back({l.get(), POLLIN, 0});
    }
    for (auto& [fd, c] : conns) {
      short ev = c.file.valid() ? POLLOUT : POLLIN;
      p.push_back({fd, ev, 0});
    }
    // session->fd() is -1 while the agent is away (poll skips it); timeout_ms() says when the
    // session wants poll_event() again to register anew.
    const int st = session->timeout_ms();
    if (::poll(p.data(), p.size(), st < 0 || st > 500 ? 500 : st) < 0) {
      continue;
    }
    const bool agent_io = (p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
    if (agent_io || session->timeout_ms() == 0) {
      for (;;) {
        auto ev = session->poll_event();
        if (!ev) {
          std::fprintf(stderr, "rendr-fileserver: agent: %s\n", ev.error().message().c_str());
          return 1;
        }
        if (!*ev) {
          break;
        }
        if (auto* lost = std::get_if<Session::AgentLost>(&**ev)) {
          std::printf("rendr-fileserver: agent lost (%s): serving %zu connections on "
                      "(%zu handed back from an unfinished migration, %zu frozen kept for the next agent), "
                      "registering again when an agent is back\n",
                      lost->why.c_str(), conns.size() + lost->exports_returned,
                      lost->exports_returned, lost->exports_frozen);
          std::fflush(stdout);
        } else if (auto* back = std::get_if<Session::AgentBack>(&**ev)) {
          std::printf("rendr-fileserver: agent back after %u attempts: service %s registered "
                      "again, %zu connections tracked, %zu frozen exports handed to it\n",
                      back->attempts, service.c_str(), back->conns, back->reclaimed);
          std::fflush(stdout);
        } else if (auto* er = std::get_if<Session::ExportRequest>(&**ev)) {
          for (auto id : er->conn_ids) {
            auto it = by_id.find(id);
            if (it == by_id.end()) {
              (void)session->refuse_export(id, "unknown connection");
              continue;
            }
            Conn& c = conns[it->second];
            if (auto x = session->export_conn(id, c.fd.get(), state_of(c)); !x.ok()) {
              // Not handed over (the agent went away): the connection stays ours.
              std::fprintf(stderr, "rendr-fileserver: export: %s\n", x.error().message().c_str());
              continue;
            }
            conns.erase(it->second);
            by_id.erase(it);
          }
        } else if (auto* ad = std::get_if<Session::Adopt>(&**ev)) {
          adopt(ad->conn_id, std::move(ad->fd), ad->state);
        } else if (auto* rt = std::get_if<Session::Returned>(&**ev)) {
          adopt(rt->conn_id, std::move(rt->fd), rt->state);
        }
      }
      if (agent_io) {
        continue;
      }
    }
    for (std::size_t i = 0; i < listeners.size(); ++i) {
      if ((p[1 + i].revents & POLLIN) == 0) {
        continue;
      }
      int fd = ::accept4(listeners[i].get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        conns[fd].fd = UniqueFd(fd);
      }
    }
    for (std::size_t k = 1 + listeners.size(); k < p.size(); ++k) {
      int fd = p[k].fd;
      auto it = conns.find(fd);
      if (it == conns.end() || p[k].revents == 0) {
        continue;
      }
      Conn& c = it->second;
      if (!c.file.valid()) {
        char buf[4096];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) {
          drop(fd);
          continue;
        }
        c.req.append(buf, static_cast<std::size_t>(n));
        auto end = c.req.find("\r\n\r\n");
        if (end == std::string::npos) {
          if (c.req.size() > 16384) {
            drop(fd);
          }
          continue;
        }
        std::string line = c.req.substr(0, c.req.find("\r\n"));
        std::string status = "200 OK";
        std::string name;
        if (line.rfind("GET /", 0) == 0) {
          name = line.substr(5, line.find(' ', 5) - 5);
        }
        struct stat sb {};
        std::string path = root + "/" + name;
        if (name.empty() || name.find("..") != std::string::npos || name.find('/') != std::string::npos ||
            ::stat(path.c_str(), &sb) != 0 || !S_ISREG(sb.st_mode)) {
          std::string body = "not found\n";
          std::string resp = "HTTP/1.1 404 Not Found\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
          (void)::send(fd, resp.data(), resp.size(), MSG_NOSIGNAL);
          drop(fd);
          continue;
        }
        c.path = path;
        c.size = static_cast<std::uint64_t>(sb.st_size);
        c.file = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        std::string hdr = "HTTP/1.1 " + status + "\r\nContent-Type: application/octet-stream\r\n" +
                          "Content-Length: " + std::to_string(c.size) +
                          "\r\nConnection: close\r\n\r\n";
        // The header is small: a fresh socket's buffer always takes it at once.
        (void)::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        (void)::send(fd, hdr.data(), hdr.size(), MSG_NOSIGNAL);
        nonblock(fd);
        if (c.id == 0) {
          auto id = session->track(fd);
          if (id) {
            c.id = *id;
            by_id[*id] = fd;
          }
        }
        continue;
      }
      if (c.offset >= c.size) {
        ::shutdown(fd, SHUT_WR);
        drop(fd);
        continue;
      }
      off_t off = static_cast<off_t>(c.offset);
      std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(c.size - c.offset, 1 << 20));
      ssize_t w = ::sendfile(fd, c.file.get(), &off, chunk);
      if (w > 0) {
        c.offset += static_cast<std::uint64_t>(w);
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        drop(fd);
      }
    }
  }
  return 0;
}
