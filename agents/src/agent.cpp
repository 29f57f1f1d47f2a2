// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the composition root. Agent::init / shutdown and run_agent; the jobs live in
// the files listed in agent_internal.hpp.
#include "agent_internal.hpp"

#include <openssl/ssl.h>

#include <sys/resource.h>
#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

namespace rendr::agents {

Status Agent::setup_tls() {
  auto prep = [&](asio::ssl::context& ctx, const char* role) -> Status {
    SSL_CTX* raw = ctx.native_handle();
    SSL_CTX_set_min_proto_version(raw, TLS1_3_VERSION);
    asio::error_code ec;
    ctx.use_certificate_chain_file(cfg_.cert, ec);
    if (ec) {
      return make_error(std::errc::invalid_argument,
                        std::string(role) + ": certificate " + cfg_.cert + ": " + ec.message() +
                            " (create one with `rendrctl cert issue`)");
    }
    ctx.use_private_key_file(cfg_.key, asio::ssl::context::pem, ec);
    if (ec) {
      return make_error(std::errc::invalid_argument,
                        std::string(role) + ": private key " + cfg_.key + ": " + ec.message());
    }
    ctx.load_verify_file(cfg_.ca, ec);
    if (ec) {
      return make_error(std::errc::invalid_argument,
                        std::string(role) + ": CA " + cfg_.ca + ": " + ec.message());
    }
    ctx.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    return {};
  };
  RENDR_TRY(prep(tls_server_, "TLS server"));
  RENDR_TRY(prep(tls_client_, "TLS client"));
  return {};
}

Status Agent::init() {
  if (cfg_.name.empty()) {
    return make_error(std::errc::invalid_argument, "--name is required");
  }
  if (cfg_.cert.empty() || cfg_.key.empty() || cfg_.ca.empty()) {
    return make_error(std::errc::invalid_argument,
                      "--cert, --key and --ca are required (the agent channel is mutual TLS; "
                      "see `rendrctl cert init`)");
  }
  RENDR_TRY(setup_tls());

  ProbeOptions po;
  po.tun_device = cfg_.tun;
  if (!cfg_.tun_clone.empty()) {
    po.tun_clone = cfg_.tun_clone;
  }
  probed_ = probe_capabilities(po);
  auto rp = repair::probe_tcp_repair();
  tcp_repair_ok_ = rp.ok();
  if (!rp.ok()) {
    tcp_repair_error_ = rp.error().message();
    log_.warn("TCP_REPAIR unavailable: " + tcp_repair_error_);
  }

  RENDR_TRY(init_method());
  RENDR_TRY(init_steering());

  // Control socket: root and the agent's own user only (mode 0600, and SO_PEERCRED checked per
  // connection).
  std::string dir = cfg_.control_socket.substr(0, cfg_.control_socket.rfind('/'));
  if (!dir.empty()) {
    ::mkdir(dir.c_str(), 0755);
  }
  control_ = std::make_unique<seqp_acceptor>(io_);
  asio::error_code ec;
  mode_t old = ::umask(0177);
  auto cfd = UniqueFd::listen_unix(cfg_.control_socket, SOCK_SEQPACKET,
                                   asio::socket_base::max_listen_connections);
  ::umask(old);
  if (!cfd) {
    return std::move(cfd).take_error().with_context("--control");
  }
  control_->assign(seqp(AF_UNIX, 0), cfd->get(), ec);
  if (ec) {
    return Error{ec, "control socket " + cfg_.control_socket};
  }
  (void)cfd->release();  // the acceptor owns it now
  ::chmod(cfg_.control_socket.c_str(), 0600);

  if (!cfg_.listen.empty()) {
    auto ep = tcp_endpoint(cfg_.listen);
    if (!ep) {
      return std::move(ep).take_error().with_context("--listen");
    }
    peer_acc_ = std::make_unique<asio::ip::tcp::acceptor>(io_);
    peer_acc_->open(ep->protocol(), ec);
    if (!ec) {
      peer_acc_->set_option(asio::socket_base::reuse_address(true), ec);
      peer_acc_->bind(*ep, ec);
    }
    if (!ec) {
      peer_acc_->listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
      return Error{ec, "agent channel listen " + cfg_.listen};
    }
  }
  log_.info("agent " + cfg_.name + " ready: control " + cfg_.control_socket +
            (cfg_.listen.empty() ? "" : ", agent channel " + cfg_.listen) + ", method " +
            method_ + " (" + method_reason_ + ")");
  return {};
}

void Agent::shutdown() {
  asio::error_code ec;
  if (control_) {
    control_->close(ec);
  }
  if (peer_acc_) {
    peer_acc_->close(ec);
  }
  ::unlink(cfg_.control_socket.c_str());
  // Staged sockets close silently; held migrated fds were never handed out.
  staged_.clear();
  us_stop();
}


// ---------------------------------------------------------------------------------------------
// entry points

int run_agent(const AgentConfig& cfg) {
  if (cfg.log_level == "debug") {
    set_log_level(LogLevel::debug);
  } else if (cfg.log_level == "warn") {
    set_log_level(LogLevel::warn);
  } else if (cfg.log_level == "error") {
    set_log_level(LogLevel::error);
  } else if (std::getenv("RENDR_LOG") == nullptr) {
    set_log_level(LogLevel::info);
  }
  // Batches move thousands of fds through the agent (SCM_RIGHTS in, repair, out).
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
  }
  asio::io_context io(1);
  Agent agent(io, cfg);
  if (auto s = agent.init(); !s) {
    std::fprintf(stderr, "rendr-agent: %s\n", s.error().message().c_str());
    return 1;
  }
  asio::signal_set sigs(io, SIGINT, SIGTERM);
  sigs.async_wait([&](asio::error_code, int) {
    agent.shutdown();
    io.stop();
  });
  asio::co_spawn(io, agent.control_acceptor(), asio::detached);
  if (!cfg.listen.empty()) {
    asio::co_spawn(io, agent.peer_acceptor(), asio::detached);
  }
  asio::co_spawn(io, agent.steer_gc_loop(), asio::detached);
  asio::co_spawn(io, agent.us_event_loop(), asio::detached);
  std::signal(SIGPIPE, SIG_IGN);
  // Readiness line for supervisors and tests.
  std::printf("rendr-agent %s ready\n", cfg.name.c_str());
  std::fflush(stdout);
  io.run();
  return 0;
}

}  // namespace rendr::agents
