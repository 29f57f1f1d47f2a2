// SPDX-License-Identifier: Apache-2.0
// FlowDriver carrier I/O: starting a carrier, reads into the core, writes (gathered for
// streams, one datagram per frame for packets), closing a carrier and carrier failure.
#include "driver_internal.hpp"

#include <asio/error.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <variant>

namespace rendr::detail {

void FlowDriver::start_slot_locked(const SlotPtr& s) {
  s->started = true;
  const auto now = Clock::now();
  if (s->stream) {
    if (!s->initial.empty()) {
      (void)core_->on_receive(s->id, s->initial, now);
      s->initial.clear();
      s->initial.shrink_to_fit();
    }
    start_read_locked(s, true);
    return;
  }
  std::weak_ptr<FlowDriver> weak = weak_from_this();
  std::weak_ptr<Slot> ws = s;
  s->packet->start(
      [weak, ws](std::span<const std::byte> frame) {
        auto self = weak.lock();
        auto slot = ws.lock();
        if (!self || !slot) {
          return;
        }
        // One clock read per datagram (three were 2 % of a G3 receiver's CPU on this VM): the
        // lock wait is timed only when the lock is taken, and this handler, which only feeds
        // the core, is timed as part of the service that pumps.
        std::unique_lock lk(self->mu, std::try_to_lock);
        if (!lk.owns_lock()) {
          const auto asked = Clock::now();
          lk.lock();
          self->timing_.record_lock_wait(Clock::now() - asked);
        }
        if (slot->closed) {
          return;
        }
        (void)self->core_->on_receive(slot->id, frame, Clock::now());
        // No pump per datagram: a carrier hands over a whole batch (a recvmmsg, a QUIC
        // packet's DATAGRAM frames) from one io-thread handler, and the service posted here
        // runs after it - one flush, timer check and reader wake-up per batch, not per frame.
        self->request_service_locked();
      },
      [weak, ws](std::error_code ec) {
        auto self = weak.lock();
        auto slot = ws.lock();
        if (!self || !slot) {
          return;
        }
        std::unique_lock lk(self->mu);
        self->carrier_failed_locked(slot, ec, "udp carrier");
        self->pump_locked();
        self->run_deferred(lk);
      });
}

template <typename Fed>
void FlowDriver::read_done(const SlotPtr& s, std::error_code ec, Fed&& fed) {
  const auto asked = Clock::now();
  std::unique_lock lk(mu);
  if (s->closed) {
    return;
  }
  const auto began = begin_handler_locked(asked);
  if (ec) {
    carrier_failed_locked(s, ec, "stream carrier read");
  } else {
    fed(began);
  }
  pump_locked();
  end_handler_locked(began);
  run_deferred(lk);
}

void FlowDriver::start_read_locked(const SlotPtr& s, bool drained) {
  if (s->direct) {
    end_direct_locked(s);
  }
  // A carrier that had nothing more to read (its last read did not fill the space, and was
  // small: kStreamIdleRead) lets go of the receive chunk and reads its next input into the
  // slot's small buffer (kIdleRead), which the core copies from: an idle path (a probe a
  // second) holds no receive memory between reads (5 000 idle flows held 16 KiB each). A read,
  // not a readability wait: asio's wait costs an epoll_ctl each time (a short flow made ~6 per
  // side), a read queued after a short read costs nothing until input comes.
  if (drained) {
    (void)core_->release_recv_space(s->id);
    s->stream->async_read_some(
        s->idle_in, [self = shared_from_this(), s](std::error_code ec, std::size_t n) {
          self->read_done(s, ec, [&](Clock::time_point began) {
            (void)self->core_->on_receive(s->id, std::span(s->idle_in).first(n), began);
            if (!s->closed && !self->shut_) {
              // A full small buffer: more may be waiting - read it into the chunk at once.
              self->start_read_locked(s, n < s->idle_in.size());
            }
          });
        });
    return;
  }
  // The carrier reads straight into the core's receive chunk: DATA payloads stay where the
  // kernel put them (no copy) and are lent to the reader from there.
  auto sp = core_->recv_space(s->id);
  if (sp.space.empty()) {
    return;  // the path is gone (or failed): nothing more to read
  }
  const std::size_t room = sp.space.size();
  s->stream->async_read_some(
      sp.space, [self = shared_from_this(), s, room, hold = std::move(sp.hold)](
                    std::error_code ec, std::size_t n) mutable {
        self->read_done(s, ec, [&](Clock::time_point began) {
          hold.reset();  // the core holds the chunk; a chunk nobody views can start over
          (void)self->core_->on_received(s->id, n, began);
          if (!s->closed && !self->shut_) {
            // Bulk input (a read that filled its space or took kStreamIdleRead or more) goes
            // to a reader inside read_some if there is one (direct receive); small messages
            // stay with the io thread.
            const bool emptied = n < room && n < kStreamIdleRead;
            if (emptied || !self->offer_to_app_locked(s)) {
              self->start_read_locked(s, emptied);
            }
          }
        });
      });
}

void FlowDriver::flush_locked(const SlotPtr& s) {
  if (s->writing || s->closed) {
    return;
  }
  const auto now = Clock::now();
  if (s->stream) {
    // Gathered: DATA frames go to the carrier straight from the ledger (writev), pinned there
    // until the write completes (transmit_done), even if an ACK releases them meanwhile.
    if (core_->poll_transmit_gather(s->id, s->gather, kStreamRoom, now) == 0) {
      return;
    }
    s->writing = true;
    s->stream->async_write_gather(s->gather.pieces,
                           [self = shared_from_this(), s](std::error_code ec, std::size_t) {
                             std::unique_lock lk(self->mu);
                             s->writing = false;
                             self->core_->transmit_done(s->id);
                             if (s->closed) {
                               return;
                             }
                             if (ec) {
                               self->carrier_failed_locked(s, ec, "stream carrier write");
                             } else if (self->shut_) {
                               self->drain_locked(s);  // the flow's last frames after close()
                               return;
                             }
                             self->pump_locked();
                             self->run_deferred(lk);
                           });
    return;
  }
  const std::size_t max_frame = s->packet->max_frame();
  for (int i = 0; i < kDatagramBurst; ++i) {
    if (s->out.empty() && core_->poll_transmit(s->id, s->out, max_frame, now) == 0) {
      return;
    }
    const std::error_code ec = s->packet->send(s->out);
    if (would_block(ec)) {
      s->writing = true;
      s->packet->async_wait_writable([self = shared_from_this(), s](std::error_code wec) {
        std::unique_lock lk(self->mu);
        s->writing = false;
        if (s->closed) {
          return;
        }
        if (wec) {
          self->carrier_failed_locked(s, wec, "udp carrier wait");
        } else if (self->shut_) {
          self->drain_locked(s);
          return;
        }
        self->pump_locked();
        self->run_deferred(lk);
      });
      return;
    }
    if (ec) {
      carrier_failed_locked(s, ec, "udp carrier send");
      return;
    }
    s->out.clear();
  }
  if (core_->wants_transmit(s->id)) {
    request_service_locked();  // let other paths and flows run between bursts
  }
}

void FlowDriver::drain_locked(const SlotPtr& s) {
  flush_locked(s);
  if (!s->writing) {
    close_slot_locked(s);
  }
  if (slots_.empty()) {
    drain_timer_.cancel();
  }
}

void FlowDriver::close_slot_locked(const SlotPtr& s) {
  if (s->closed) {
    return;
  }
  s->closed = true;
  s->app_rx = false;
  if (s->stream) {
    if (s->app_busy) {
      // The reader is in recv/poll on this carrier's fd: it closes it (on this thread) once
      // it is out, so the fd cannot be reused under it.
      s->close_deferred = true;
      wake_app_reader_locked();
    } else {
      s->stream->close();
    }
  }
  if (s->packet) {
    s->packet->close();
  }
  slots_.erase(s->id);
  if (carriers_hook_) {
    carriers_hook_(slots_.size());
  }
}

void FlowDriver::carrier_failed_locked(const SlotPtr& s, std::error_code ec, const char* what) {
  if (s->closed) {
    return;
  }
  std::string why = what;
  if (const std::string more = s->stream ? s->stream->failure() : s->packet->failure();
      !more.empty()) {
    why += ": " + more;  // e.g. "stream carrier read: quic: idle timeout"
  }
  close_slot_locked(s);
  if (ec == asio::error::eof) {
    // A carrier that ends is a dead path, not the end of the flow (transport errors never look
    // like EOF): report it as a reset.
    ec = std::make_error_code(std::errc::connection_reset);
  }
  (void)core_->path_failed(s->id, Error{ec, why}, Clock::now());
}

}  // namespace rendr::detail
