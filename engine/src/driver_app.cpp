// SPDX-License-Identifier: Apache-2.0
// FlowDriver, application side: blocking reads and writes (stream and packet), the waits
// behind them, and the asio face (start_async_read / start_async_write / cancel).
#include "driver_internal.hpp"

#include <asio/error.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <variant>

namespace rendr::detail {

void FlowDriver::complete_async_locked() {
  const auto now = Clock::now();
  if (pending_read_) {
    auto& p = *pending_read_;
    auto r = core_->read(p.buf, now);
    std::optional<std::pair<std::error_code, std::size_t>> done;
    if (!r) {
      done.emplace(r.error().code, 0);
    } else if (r->bytes > 0 || p.buf.empty()) {
      note_moved_locked(r->bytes);
      done.emplace(std::error_code{}, r->bytes);
    } else if (r->eof) {
      done.emplace(asio::error::eof, 0);
    }
    if (done) {
      deferred_.push_back([h = std::move(p.h), d = *done] { h(d.first, d.second); });
      pending_read_.reset();
    }
  }
  if (pending_write_) {
    auto& p = *pending_write_;
    auto r = core_->write(p.buf, now);
    std::optional<std::pair<std::error_code, std::size_t>> done;
    if (!r) {
      done.emplace(r.error().code, 0);
    } else if (*r > 0 || p.buf.empty()) {
      note_moved_locked(*r);
      done.emplace(std::error_code{}, *r);
    }
    if (done) {
      deferred_.push_back([h = std::move(p.h), d = *done] { h(d.first, d.second); });
      pending_write_.reset();
    }
  }
}

void FlowDriver::start_async_read(std::span<std::byte> buf, IoHandler h) {
  std::unique_lock lk(mu);
  if (pending_read_) {
    lk.unlock();
    h(asio::error::in_progress, 0);
    return;
  }
  pending_read_ = PendingRead{buf, std::move(h)};
  reclaim_input_locked();
  request_service_locked();
  if (shut_) {
    auto p = std::move(*pending_read_);
    pending_read_.reset();
    lk.unlock();
    p.h(make_error_code(engine::errc::closed), 0);
  }
}

void FlowDriver::start_async_write(std::span<const std::byte> buf, IoHandler h) {
  std::unique_lock lk(mu);
  if (pending_write_) {
    lk.unlock();
    h(asio::error::in_progress, 0);
    return;
  }
  pending_write_ = PendingWrite{buf, std::move(h)};
  request_service_locked();
  if (shut_) {
    auto p = std::move(*pending_write_);
    pending_write_.reset();
    lk.unlock();
    p.h(make_error_code(engine::errc::closed), 0);
  }
}

void FlowDriver::cancel_async() {
  std::unique_lock lk(mu);
  std::vector<IoHandler> hs;
  if (pending_read_) {
    hs.push_back(std::move(pending_read_->h));
    pending_read_.reset();
  }
  if (pending_write_) {
    hs.push_back(std::move(pending_write_->h));
    pending_write_.reset();
  }
  lk.unlock();
  for (auto& h : hs) {
    h(asio::error::operation_aborted, 0);
  }
}

// --- application side ---

// wait_locked: one wait on |v| (counted in |waiters|); false once |d| has passed.
bool FlowDriver::wait_locked(std::unique_lock<std::mutex>& lk, std::condition_variable& v,
                             int& waiters, Deadline d) {
  if (d != kNoDeadline && Clock::now() >= d) {
    return false;
  }
  waiters += 1;
  if (d == kNoDeadline) {
    v.wait(lk);
  } else {
    v.wait_until(lk, d);
  }
  waiters -= 1;
  return true;
}

bool FlowDriver::wait_writable_locked(std::unique_lock<std::mutex>& lk, std::size_t want,
                                      Deadline d) {
  // Several writers: wake for the smallest want (each rechecks its own).
  write_want_ = write_waiters_ == 0 ? want : std::min(write_want_, want);
  reclaim_input_locked();  // the ACKs that make room must be read even if no reader is in
  return wait_locked(lk, write_cv, write_waiters_, d);
}

Result<std::size_t> FlowDriver::read_some(std::span<std::byte> buf, Deadline d) {
  // One reader at a time; the bulk copy runs without |mu| (the io thread needs it to receive
  // and acknowledge): the core lends whole delivered buffers (read_loan).
  std::unique_lock rl(read_mu_);
  std::unique_lock lk(mu);
  app_inside_ = true;
  struct Leave {
    FlowDriver& d;
    ~Leave() { d.leave_read_locked(); }  // mu is held on every return
  } leave{*this};
  for (;;) {
    auto r = core_->read_loan(buf, read_loans_, Clock::now());
    if (!r) {
      return std::move(r).take_error();
    }
    if (r->bytes > 0) {
      if (r->output) {
        request_service_locked();  // the freed receive window admitted frames: ACK them
      }
      lk.unlock();
      std::size_t off = 0;
      for (const auto& l : read_loans_) {
        const auto b = l.bytes();
        std::memcpy(buf.data() + off, b.data(), b.size());
        off += b.size();
      }
      lk.lock();
      core_->recycle(read_loans_);
      note_moved_locked(r->bytes);
      return r->bytes;
    }
    if (r->eof || buf.empty()) {
      return std::size_t{0};
    }
    if (auto s = app_slot_locked()) {
      if (!app_receive_locked(lk, s, d)) {
        return timed_out("read");
      }
      continue;
    }
    // An io read of bulk input that completes now hands its carrier to this thread.
    if (!wait_locked(lk, read_cv, read_waiters_, d)) {
      return timed_out("read");
    }
  }
}

Result<std::size_t> FlowDriver::write_some(std::span<const std::byte> data, Deadline d) {
  // One writer at a time; the copy into frame buffers runs without |mu| (reserve_write, then
  // commit_write assigns SEQs in order).
  data = data.first(std::min(data.size(), kAppSlice));
  std::unique_lock wl(write_mu_);
  std::unique_lock lk(mu);
  for (;;) {
    auto r = core_->reserve_write(data.size(), write_loans_);
    if (!r) {
      return std::move(r).take_error();
    }
    if (*r > 0) {
      lk.unlock();
      std::size_t off = 0;
      for (auto& l : write_loans_) {
        l.buf.insert(l.buf.end(), data.begin() + static_cast<std::ptrdiff_t>(off),
                     data.begin() + static_cast<std::ptrdiff_t>(off + l.payload));
        off += l.payload;
      }
      lk.lock();
      auto c = core_->commit_write(write_loans_, Clock::now());
      if (!c) {
        return std::move(c).take_error();
      }
      request_service_locked();
      note_moved_locked(*c);
      return *c;
    }
    if (data.empty()) {
      return std::size_t{0};
    }
    if (!wait_writable_locked(lk, std::min(data.size(), core_->write_wake_bytes()), d)) {
      return timed_out("write");
    }
  }
}

Status FlowDriver::write_packet(std::span<const std::byte> p, Deadline d) {
  std::unique_lock lk(mu);
  for (;;) {
    auto r = core_->write_packet(p, Clock::now());
    if (!r) {
      return std::move(r).take_error();
    }
    if (*r) {
      request_service_locked();
      return {};
    }
    if (!wait_writable_locked(lk, std::max<std::size_t>(p.size(), 1), d)) {
      return timed_out("write packet");
    }
  }
}

Result<bool> FlowDriver::read_packet(std::vector<std::byte>& out, Deadline d) {
  std::unique_lock lk(mu);
  for (;;) {
    const bool ready = core_->packet_ready();
    auto r = core_->read_packet(out, Clock::now());
    if (!r) {
      return std::move(r).take_error();
    }
    if (ready) {
      if (r->output) {
        // The read admitted frames the window held back: ACK them. A read that admitted
        // nothing wakes no io thread (one wake-up per packet read was the reader's cost).
        request_service_locked();
      }
      return true;
    }
    if (r->eof) {
      return false;
    }
    if (!wait_locked(lk, read_cv, read_waiters_, d)) {
      return timed_out("read packet");
    }
  }
}

}  // namespace rendr::detail
