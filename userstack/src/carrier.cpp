// SPDX-License-Identifier: Apache-2.0
#include <rendr/userstack/carrier.hpp>

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <unistd.h>

#include <optional>

namespace rendr::userstack {
namespace {

// State is shared with the handlers queued on the io_context, which may run after the carrier
// itself is gone (the same reason the TCP carrier shares its socket).
struct State : std::enable_shared_from_this<State> {
  State(asio::io_context& ctx, ConnectionPtr c, int efd)
      : io(ctx), conn(std::move(c)), ev(ctx, efd) {}

  struct ReadOp {
    std::span<std::byte> buf;
    IoHandler h;
  };
  struct WriteOp {
    std::span<const std::byte> buf;
    std::size_t done = 0;
    IoHandler h;
  };

  asio::io_context& io;
  ConnectionPtr conn;
  asio::posix::stream_descriptor ev;  // a dup of the Connection's eventfd
  std::optional<ReadOp> rd;
  std::optional<WriteOp> wr;
  bool armed = false;
  bool closed = false;

  void complete(IoHandler h, std::error_code ec, std::size_t n) {
    asio::post(io, [h = std::move(h), ec, n] { h(ec, n); });
  }

  // progress moves the pending operations as far as they go now. The eventfd wait is queued
  // BEFORE the event is cleared and the Connection tried: asio registers descriptors
  // edge-triggered, so a wake-up that arrived while no wait was queued would otherwise be lost.
  void progress() {
    if (closed) {
      return;
    }
    arm();
    conn->clear_event();
    if (rd) {
      auto r = conn->read(rd->buf);
      if (r && *r > 0) {
        complete(std::move(rd->h), {}, *r);
        rd.reset();
      } else if (r) {
        complete(std::move(rd->h), asio::error::eof, 0);
        rd.reset();
      } else if (r.error().code != std::errc::resource_unavailable_try_again) {
        complete(std::move(rd->h), r.error().code, 0);
        rd.reset();
      }
    }
    while (wr && wr->done < wr->buf.size()) {
      auto w = conn->write(wr->buf.subspan(wr->done));
      if (w) {
        wr->done += *w;
        continue;
      }
      if (w.error().code != std::errc::resource_unavailable_try_again) {
        complete(std::move(wr->h), w.error().code, wr->done);
        wr.reset();
      }
      break;
    }
    if (wr && wr->done == wr->buf.size()) {
      complete(std::move(wr->h), {}, wr->done);
      wr.reset();
    }
  }

  void arm() {
    if (armed || (!rd && !wr)) {
      return;
    }
    armed = true;
    ev.async_wait(asio::posix::stream_descriptor::wait_read,
                  [self = shared_from_this()](std::error_code ec) {
                    self->armed = false;
                    if (!ec) {
                      self->progress();
                    }
                  });
  }

  void close() {
    if (closed) {
      return;
    }
    closed = true;
    std::error_code ec;
    ev.cancel(ec);
    ev.close(ec);
    if (rd) {
      complete(std::move(rd->h), asio::error::operation_aborted, 0);
      rd.reset();
    }
    if (wr) {
      complete(std::move(wr->h), asio::error::operation_aborted, wr->done);
      wr.reset();
    }
    conn->close();
  }
};

class ConnectionCarrier final : public StreamCarrier {
 public:
  explicit ConnectionCarrier(std::shared_ptr<State> st)
      : st_(std::move(st)),
        local_(st_->conn->tuple().local.to_string()),
        remote_(st_->conn->tuple().remote.to_string()) {}
  ~ConnectionCarrier() override { close(); }

  void async_read_some(std::span<std::byte> buf, IoHandler handler) override {
    if (st_->closed) {
      st_->complete(std::move(handler), asio::error::operation_aborted, 0);
      return;
    }
    st_->rd = State::ReadOp{buf, std::move(handler)};
    // Not inside the initiating call: try on the next turn of the io_context.
    asio::post(st_->io, [s = st_] { s->progress(); });
  }
  void async_write(std::span<const std::byte> buf, IoHandler handler) override {
    if (st_->closed) {
      st_->complete(std::move(handler), asio::error::operation_aborted, 0);
      return;
    }
    st_->wr = State::WriteOp{buf, 0, std::move(handler)};
    asio::post(st_->io, [s = st_] { s->progress(); });
  }
  void close() override { st_->close(); }
  [[nodiscard]] std::string local() const override { return local_; }
  [[nodiscard]] std::string remote() const override { return remote_; }

 private:
  std::shared_ptr<State> st_;
  std::string local_;
  std::string remote_;
};

}  // namespace

Result<StreamCarrierPtr> make_connection_carrier(asio::io_context& io, ConnectionPtr conn) {
  int efd = ::dup(conn->event_fd());
  if (efd < 0) {
    return errno_error("userstack carrier: dup eventfd");
  }
  auto st = std::make_shared<State>(io, std::move(conn), efd);
  return StreamCarrierPtr(std::make_unique<ConnectionCarrier>(std::move(st)));
}

}  // namespace rendr::userstack
