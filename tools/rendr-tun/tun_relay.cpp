// SPDX-License-Identifier: Apache-2.0
#include "tun_relay.hpp"

#include <rendr/common/block_pool.hpp>

#include <asio/dispatch.hpp>
#include <asio/error.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/write.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>
#include <vector>

namespace rendr::tun {

namespace {

constexpr std::size_t kBuf = 64 * 1024;  // per direction

// relay_buffer: a kBuf buffer for one direction of one relay, from a process-wide pool (at
// most 64 kept, 4 MiB): a short flow takes two and gives them back (rendr/common/block_pool.hpp).
BlockPool::Block relay_buffer() {
  static auto* pool = new BlockPool(kBuf, 64);  // never destroyed: relays may outlive statics
  return pool->take();
}

using Done = std::function<void(std::error_code, std::size_t)>;

// AppSide: the application's end of a relay, driven on the io thread. read_some completes with
// at least one byte, or asio::error::eof after the app's FIN; write completes once every byte
// was taken (or with the error).
class AppSide {
 public:
  virtual ~AppSide() = default;
  virtual void read_some(std::span<std::byte> buf, Done h) = 0;
  // read_now: bytes the app has sent already, taken without waiting (0: none, or its FIN - a
  // read_some after it tells which).
  virtual std::size_t read_now(std::span<std::byte> /*buf*/) { return 0; }
  virtual void write(std::span<const std::byte> buf, Done h) = 0;
  virtual void shutdown_write() = 0;  // our FIN, after what was written
  virtual void fail() = 0;            // the engine flow failed: end both directions now
  virtual void close() {}             // the relay ended: let go (no operation is pending)
};

// FdSide: a connected stream socket.
class FdSide final : public AppSide {
 public:
  explicit FdSide(asio::posix::stream_descriptor sd) : sd_(std::move(sd)) {
    std::error_code ignored;
    sd_.non_blocking(true, ignored);
  }
  void read_some(std::span<std::byte> buf, Done h) override {
    sd_.async_read_some(asio::buffer(buf.data(), buf.size()), std::move(h));
  }
  void write(std::span<const std::byte> buf, Done h) override {
    asio::async_write(sd_, asio::buffer(buf.data(), buf.size()), std::move(h));
  }
  void shutdown_write() override { ::shutdown(sd_.native_handle(), SHUT_WR); }
  void fail() override { ::shutdown(sd_.native_handle(), SHUT_RDWR); }

 private:
  asio::posix::stream_descriptor sd_;
};

// LwipSide: an lwIP Connection, woken by its waker (Connection::set_waker): lwIP's input runs
// on this io thread (the ingress polls the TUN here), so an event posts one progress() - a push
// onto the io thread's own queue - and the pending operations are retried there. No event fd,
// no registration, no syscall per event.
class LwipSide final : public AppSide, public std::enable_shared_from_this<LwipSide> {
 public:
  LwipSide(const asio::any_io_executor& ex, userstack::ConnectionPtr c)
      : ex_(ex), conn_(std::move(c)) {}

  // start installs the waker (once the side is owned by a shared_ptr).
  void start() {
    conn_->set_waker([w = weak_from_this(), ex = ex_] {
      // lwIP's core lock is held here: only post.
      auto self = w.lock();
      if (self && !self->wake_posted_.exchange(true)) {
        asio::post(ex, [self] {
          self->wake_posted_ = false;
          self->progress();
        });
      }
    });
  }

  void read_some(std::span<std::byte> buf, Done h) override {
    rd_.emplace(Op{buf, 0, std::move(h), {}});
    progress();
  }
  std::size_t read_now(std::span<std::byte> buf) override {
    if (!conn_ || rd_) {
      return 0;
    }
    auto r = conn_->read(buf);
    return r ? *r : 0;
  }
  void write(std::span<const std::byte> buf, Done h) override {
    wr_.emplace(Op{{}, 0, std::move(h), buf});
    progress();
  }
  void shutdown_write() override { (void)conn_->shutdown_write(); }
  void fail() override {
    failed_ = true;
    conn_->abort();  // the app sees a reset of this one flow
    progress();      // pending operations end with the Connection's error
  }
  void close() override {
    // The Connection closes as a kernel socket would (FIN after what it still sends).
    conn_.reset();
  }

 private:
  struct Op {
    std::span<std::byte> in;
    std::size_t done = 0;
    Done h;
    std::span<const std::byte> out;
  };

  void complete(Done h, std::error_code ec, std::size_t n) {
    // Posted, not called: a handler's next operation must not recurse into this one.
    asio::post(ex_, [h = std::move(h), ec, n] { h(ec, n); });
  }

  // progress moves the pending operations as far as they go now; what is still pending waits
  // for the next event (the waker calls progress again).
  void progress() {
    if (!conn_) {
      return;  // closed
    }
    if (rd_) {
      auto r = conn_->read(rd_->in);
      if (r && *r > 0) {
        complete(std::move(rd_->h), {}, *r);
        rd_.reset();
      } else if (r) {
        complete(std::move(rd_->h), asio::error::eof, 0);
        rd_.reset();
      } else if (r.error().code != std::errc::resource_unavailable_try_again || failed_) {
        complete(std::move(rd_->h), r.error().code, 0);
        rd_.reset();
      }
    }
    while (wr_ && wr_->done < wr_->out.size()) {
      auto w = conn_->write(wr_->out.subspan(wr_->done));
      if (w) {
        wr_->done += *w;
        continue;
      }
      if (w.error().code != std::errc::resource_unavailable_try_again || failed_) {
        complete(std::move(wr_->h), w.error().code, wr_->done);
        wr_.reset();
      }
      break;
    }
    if (wr_ && wr_->done == wr_->out.size()) {
      complete(std::move(wr_->h), {}, wr_->done);
      wr_.reset();
    }
  }

  asio::any_io_executor ex_;
  userstack::ConnectionPtr conn_;
  std::optional<Op> rd_;
  std::optional<Op> wr_;
  std::atomic<bool> wake_posted_{false};
  bool failed_ = false;
};

class Relay : public std::enable_shared_from_this<Relay> {
 public:
  Relay(ConnPtr conn, std::shared_ptr<AppSide> app, RelayHooks hooks)
      : conn_(std::move(conn)), app_(std::move(app)), hooks_(std::move(hooks)) {}

  [[nodiscard]] asio::any_io_executor executor() const { return conn_->get_executor(); }

  void start() {  // io thread
    // What the app sent while its flow was dialled (waiting in lwIP) goes to the Conn now:
    // an async dial's completion holds the flow's first transmit until this ran, so these
    // bytes leave with the L3 record and the first probe in one carrier write.
    if (const std::size_t n = app_->read_now({up_.data(), kBuf}); n > 0) {
      on_up_read({}, n);
    } else {
      read_up();
    }
    read_down();
  }

 private:
  // --- app -> Conn ---
  void read_up() {
    app_->read_some({up_.data(), kBuf}, [self = shared_from_this()](std::error_code ec,
                                                                   std::size_t n) {
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
      r_.up = Error{ec, "relay: read from the app"};
      end_direction();
      return;
    }
    asio::async_write(*conn_, asio::buffer(up_.data(), n),
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

  // --- Conn -> app ---
  void read_down() {
    conn_->async_read_some(asio::buffer(down_.data(), kBuf),
                           [self = shared_from_this()](std::error_code ec, std::size_t n) {
                             self->on_down_read(ec, n);
                           });
  }

  void on_down_read(std::error_code ec, std::size_t n) {
    if (ec == asio::error::eof) {
      app_->shutdown_write();  // the far side half-closed: pass the FIN on
      end_direction();
      return;
    }
    if (ec) {
      r_.down = Error{ec, "relay: read from the engine flow"};
      conn_failed(r_.down.error());
      end_direction();
      return;
    }
    app_->write({down_.data(), n}, [self = shared_from_this()](std::error_code wec, std::size_t w) {
      self->on_down_written(wec, w);
    });
  }

  void on_down_written(std::error_code ec, std::size_t n) {
    r_.from_conn += n;
    if (hooks_.progress.from_conn != nullptr) {
      hooks_.progress.from_conn->fetch_add(n, std::memory_order_relaxed);
    }
    if (ec) {
      r_.down = Error{ec, "relay: write to the app"};
      app_->shutdown_write();
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
    app_->fail();  // before anything else reaches the app: a reset, not a FIN
    if (hooks_.on_conn_error) {
      hooks_.on_conn_error(e);
    }
  }

  void end_direction() {
    if (++ended_ < 2) {
      return;
    }
    app_->close();
    conn_->async_close([self = shared_from_this()](Status) {
      if (self->hooks_.on_done) {
        self->hooks_.on_done(self->r_);
      }
    });
  }

  ConnPtr conn_;
  std::shared_ptr<AppSide> app_;
  RelayHooks hooks_;
  BlockPool::Block up_ = relay_buffer();
  BlockPool::Block down_ = relay_buffer();
  RelayResult r_;
  int ended_ = 0;
};

void run(ConnPtr conn, std::shared_ptr<AppSide> app, RelayHooks hooks) {
  auto r = std::make_shared<Relay>(std::move(conn), std::move(app), std::move(hooks));
  asio::dispatch(r->executor(), [r] { r->start(); });
}

}  // namespace

void start_relay(ConnPtr conn, UniqueFd fd, RelayHooks hooks) {
  asio::posix::stream_descriptor sd(conn->get_executor(), fd.release());
  start_relay(std::move(conn), std::move(sd), std::move(hooks));
}

void start_relay(ConnPtr conn, asio::posix::stream_descriptor sd, RelayHooks hooks) {
  run(std::move(conn), std::make_shared<FdSide>(std::move(sd)), std::move(hooks));
}

void start_relay(ConnPtr conn, userstack::ConnectionPtr app, RelayHooks hooks) {
  auto side = std::make_shared<LwipSide>(conn->get_executor(), std::move(app));
  side->start();
  run(std::move(conn), std::move(side), std::move(hooks));
}

}  // namespace rendr::tun
