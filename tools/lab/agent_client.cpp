// SPDX-License-Identifier: Apache-2.0
#include "lab/agent_client.hpp"

#include "lab/lab_util.hpp"

#include <rendr/agents/packet.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

namespace rendr::lab {

struct AgentTlsClient::Impl {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  UniqueFd fd;
  ~Impl() {
    SSL_free(ssl);
    SSL_CTX_free(ctx);
  }
};

AgentTlsClient::~AgentTlsClient() = default;

Result<std::unique_ptr<AgentTlsClient>> AgentTlsClient::open(const std::string& dir,
                                                             const std::string& name,
                                                             int netns_fd, const std::string& ip,
                                                             int port, int timeout_s) {
  // A refused channel is closed under our writes: EPIPE, not a signal that kills the caller.
  ::signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<AgentTlsClient> c(new AgentTlsClient());
  c->impl_ = std::make_unique<Impl>();
  Impl& im = *c->impl_;
  im.ctx = SSL_CTX_new(TLS_client_method());
  const std::string d = dir + "/";
  if (im.ctx == nullptr ||
      SSL_CTX_use_certificate_chain_file(im.ctx, (d + name + ".pem").c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(im.ctx, (d + name + ".key").c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(im.ctx, (d + "ca.pem").c_str(), nullptr) != 1) {
    return make_error(std::errc::invalid_argument,
                      "agent client: cannot load " + name + "'s certificate from " + dir);
  }
  SSL_CTX_set_verify(im.ctx, SSL_VERIFY_PEER, nullptr);
  {
    std::optional<NetnsEnter> in;
    if (netns_fd >= 0) {
      auto e = NetnsEnter::enter(netns_fd);
      if (!e) {
        return std::move(e).take_error();
      }
      in.emplace(std::move(*e));
    }
    im.fd = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  }
  if (!im.fd.valid()) {
    return errno_error("agent client: socket");
  }
  timeval tv{timeout_s, 0};
  ::setsockopt(im.fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(im.fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1) {
    return make_error(std::errc::invalid_argument, "agent client: bad address " + ip);
  }
  if (::connect(im.fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return errno_error("agent client: connect " + ip + ":" + std::to_string(port));
  }
  im.ssl = SSL_new(im.ctx);
  SSL_set_fd(im.ssl, im.fd.get());
  if (SSL_connect(im.ssl) != 1) {
    return make_error(std::errc::connection_refused,
                      "agent client: TLS handshake with " + ip + " failed");
  }
  return c;
}

bool AgentTlsClient::send_raw(std::span<const std::byte> b) {
  return SSL_write(impl_->ssl, b.data(), static_cast<int>(b.size())) ==
         static_cast<int>(b.size());
}

std::optional<agents::Message> AgentTlsClient::ask(const agents::Message& m) {
  auto f = m.encode_framed();
  if (!send_raw(f)) {
    return std::nullopt;
  }
  agents::FrameReader fr;
  std::byte buf[16384];
  for (;;) {
    auto n = fr.next();
    if (!n.ok()) {
      return std::nullopt;
    }
    if (n->has_value()) {
      return std::move(**n);
    }
    int got = SSL_read(impl_->ssl, buf, sizeof buf);
    if (got <= 0) {
      return std::nullopt;
    }
    fr.feed(std::span(buf, static_cast<std::size_t>(got)));
  }
}

}  // namespace rendr::lab
