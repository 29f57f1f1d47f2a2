// SPDX-License-Identifier: Apache-2.0
#include "tun_relay.hpp"

#include <asio/error.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/dispatch.hpp>
#include <asio/write.hpp>

#include <sys/socket.h>

#include <memory>

namespace rendr::tun {

namespace {

constexpr std::size_t kBuf = 64 * 1024;  // per direction

class Relay : public std::enable_shared_from_this<Relay> {
 public:
  Relay(ConnPtr conn, UniqueFd fd, RelayHooks hooks)
      : conn_(std::move(conn)),
        sd_(conn_->get_executor(), fd.release()),
        hooks_(std::move(hooks)) {}

  [[nodiscard]] asio::any_io_executor executor() { return sd_.get_executor(); }

  void start() {  // io thread
    std::error_code ignored;
    sd_.non_blocking(true, ignored);
    read_up();
    read_down();
  }

 private:
  // --- fd -> Conn ---
  void read_up() {
    sd_.async_read_some(asio::buffer(up_.get(), kBuf),
                        [self = shared_from_this()](std::error_code ec, std::size_t n) {
                          self->on_up_read(ec, n);
                        });
  }

  void on_up_read(std::error_code ec, std::size_t n) {
    if (ec == asio::error::eof || (!ec && n == 0)) {
      if (!r_.conn_failed) {
        r_.up = conn_->shutdown_write();  // the app half-closed: the far side reads EOF
      }
      end_direction();
      return;
    }
    if (ec) {
      r_.up = Error{ec, "relay: recv"};
      end_direction();
      return;
    }
    asio::async_write(*conn_, asio::buffer(up_.get(), n),
                      [self = shared_from_this()](std::error_code wec, std::size_t w) {
                        self->on_up_written(wec, w);
                      });
  }

  void on_up_written(std::error_code ec, std::size_t n) {
    if (ec) {
      r_.up = Error{ec, "relay: write to the engine flow"};
      conn_failed(r_.up.error());
      end_direction();
      return;
    }
    r_.to_conn += n;
    if (hooks_.progress.to_conn != nullptr) {
      hooks_.progress.to_conn->fetch_add(n, std::memory_order_relaxed);
    }
    read_up();
  }

  // --- Conn -> fd ---
  void read_down() {
    conn_->async_read_some(asio::buffer(down_.get(), kBuf),
                           [self = shared_from_this()](std::error_code ec, std::size_t n) {
                             self->on_down_read(ec, n);
                           });
  }

  void on_down_read(std::error_code ec, std::size_t n) {
    if (ec == asio::error::eof) {
      ::shutdown(sd_.native_handle(), SHUT_WR);  // the far side half-closed: pass the FIN on
      end_direction();
      return;
    }
    if (ec) {
      r_.down = Error{ec, "relay: read from the engine flow"};
      conn_failed(r_.down.error());
      end_direction();
      return;
    }
    asio::async_write(sd_, asio::buffer(down_.get(), n),
                      [self = shared_from_this()](std::error_code wec, std::size_t w) {
                        self->on_down_written(wec, w);
                      });
  }

  void on_down_written(std::error_code ec, std::size_t n) {
    r_.from_conn += n;
    if (hooks_.progress.from_conn != nullptr) {
      hooks_.progress.from_conn->fetch_add(n, std::memory_order_relaxed);
    }
    if (ec) {
      r_.down = Error{ec, "relay: send"};
      ::shutdown(sd_.native_handle(), SHUT_WR);
      end_direction();
      return;
    }
    read_down();
  }

  void conn_failed(const Error& e) {
    if (r_.conn_failed) {
      return;
    }
    r_.conn_failed = true;
    if (hooks_.on_conn_error) {
      hooks_.on_conn_error(e);
    }
    ::shutdown(sd_.native_handle(), SHUT_RDWR);  // ends the other direction's read
  }

  void end_direction() {
    if (++ended_ < 2) {
      return;
    }
    conn_->async_close([self = shared_from_this()](Status) {
      if (self->hooks_.on_done) {
        self->hooks_.on_done(self->r_);
      }
    });
  }

  ConnPtr conn_;
  asio::posix::stream_descriptor sd_;
  RelayHooks hooks_;
  // Uninitialised: a short flow should not pay for zeroing (and faulting in) 64 KiB.
  std::unique_ptr<std::byte[]> up_{new std::byte[kBuf]};
  std::unique_ptr<std::byte[]> down_{new std::byte[kBuf]};
  RelayResult r_;
  int ended_ = 0;
};

}  // namespace

void start_relay(ConnPtr conn, UniqueFd fd, RelayHooks hooks) {
  auto r = std::make_shared<Relay>(std::move(conn), std::move(fd), std::move(hooks));
  asio::dispatch(r->executor(), [r] { r->start(); });
}

}  // namespace rendr::tun
