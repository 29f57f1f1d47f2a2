// SPDX-License-Identifier: Apache-2.0
// FlowDriver, direct receive (docs/engine.md "Direct receive"): a reader blocked in read_some
// takes over the input of a carrier with a direct_read_fd (tcp) and receives from it on its own
// thread - recv(2) into the core's receive chunk, poll(2) on the socket when it is empty -
// instead of being woken by the io thread after every read the io thread made. The io thread
// keeps everything else (writes, ACKs, timers, events) and takes the input back when the reader
// has been away from read_some for kAppInputCheck, or when the carrier ends.
#include "driver_internal.hpp"

#include <asio/post.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace rendr::detail {

namespace {

// How long input the reader holds may go unread while the reader is away from read_some before
// the io thread reads it again (control frames - the peer's ACKs for our writes, probes - wait
// at most this long).
constexpr std::chrono::milliseconds kAppInputCheck{5};
constexpr std::size_t kBulkRecv = 64 * 1024;
constexpr std::size_t kBulkLowat = 256 * 1024;
constexpr std::chrono::milliseconds kBulkWait{1};

// RENDR_DIRECT_RECEIVE=0 turns direct receive off (A/B measurements, diagnosis).
bool direct_receive_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("RENDR_DIRECT_RECEIVE");
    return v == nullptr || std::string_view(v) != "0";
  }();
  return on;
}

}  // namespace

FlowDriver::SlotPtr FlowDriver::app_slot_locked() const {
  for (const auto& [id, s] : slots_) {
    if (s->app_rx) {
      return s;
    }
  }
  return nullptr;
}

bool FlowDriver::offer_to_app_locked(const SlotPtr& s) {
  // A reader inside read_some (waiting, or copying what it got) comes back for more.
  if (!app_inside_ || !direct_receive_enabled() || shut_ || closed_event_ || s->closed || s->no_offer ||
      !s->stream || accept_gate_ || core_->packet_mode() || app_slot_locked() != nullptr) {
    return false;
  }
  const int fd = s->stream->direct_read_fd();
  if (fd < 0) {
    return false;
  }
  if (core_->recv_space(s->id).space.empty()) {
    return false;  // the path cannot take input (failed): the io thread's read finds out
  }
  if (!app_wake_) {
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
      return false;
    }
    app_wake_ = UniqueFd(efd);
  }
  s->stream->set_input_watch(false);
  s->app_fd = fd;
  s->direct = true;
  s->app_rx = true;
  direct_handovers_ += 1;
  wake_reader_ = true;  // it waits on read_cv: let it take the input
  return true;
}

void FlowDriver::end_direct_locked(const SlotPtr& s) {
  if (s->app_lowat) {
    // Back to waking for any byte: the io thread's reactor must see every frame.
    const int one = 1;
    (void)::setsockopt(s->app_fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
    s->app_lowat = false;
  }
  s->direct = false;
  s->stream->set_input_watch(true);
}

void FlowDriver::return_input_locked(const SlotPtr& s) {
  s->app_rx = false;
  if (!s->closed && !shut_) {
    s->needs_read = true;
    request_service_locked();
  }
}

void FlowDriver::reclaim_input_locked() {
  if (app_inside_) {
    return;  // the reader is receiving: it reads whatever arrives
  }
  if (auto s = app_slot_locked()) {
    direct_reclaims_ += 1;
    return_input_locked(s);
  }
}

void FlowDriver::reclaim_idle_locked() {
  if (app_inside_) {
    return;
  }
  if (auto s = app_slot_locked()) {
    direct_reclaims_ += 1;
    s->app_rx = false;
    if (!s->closed && !shut_) {
      start_read_locked(s, false);  // back into the reactor (set_input_watch) and read
    }
  }
}

void FlowDriver::wake_app_reader_locked() {
  if (!app_wake_ || app_woken_ || !app_inside_) {
    return;
  }
  const std::uint64_t one = 1;
  if (::write(app_wake_.get(), &one, sizeof one) == sizeof one) {
    app_woken_ = true;
  }
}

void FlowDriver::leave_read_locked() {
  app_inside_ = false;
  if (app_slot_locked() != nullptr &&
      (!armed_ || *armed_ > Clock::now() + 2 * kAppInputCheck)) {
    request_service_locked();
  }
}

std::optional<engine::TimePoint> FlowDriver::app_input_check_locked() const {
  if (app_inside_ || app_slot_locked() == nullptr) {
    return std::nullopt;
  }
  return Clock::now() + kAppInputCheck;
}

bool FlowDriver::app_receive_locked(std::unique_lock<std::mutex>& lk, const SlotPtr& s,
                                    Deadline d) {
  const int fd = s->app_fd;
  auto sp = core_->recv_space(s->id);
  if (shut_ || fd < 0 || sp.space.empty()) {
    return_input_locked(s);
    return true;
  }
  s->app_busy = true;
  lk.unlock();
  // Recv first: by the time the reader is back, the socket has mostly taken more (polling
  // first after a recv that emptied it measured slower: poll + recv instead of one recv).
  ssize_t n = ::recv(fd, sp.space.data(), sp.space.size(), MSG_DONTWAIT);
  int err = n < 0 ? errno : 0;
  bool expired = false;
  if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)) {
    // Nothing yet: sleep on the socket itself (and on the io thread's wake-up: another path
    // delivered, the carrier is being closed, the flow ends).
    int ms = -1;
    if (d != kNoDeadline) {
      const auto left = d - Clock::now();
      ms = left <= engine::Duration::zero()
               ? 0
               : static_cast<int>(
                     std::chrono::ceil<std::chrono::milliseconds>(left).count());
    }
    // Bulk input (the last recv was large): wake for kBulkLowat bytes or after kBulkWait,
    // not for every segment.
    const bool bulk = s->app_last >= kBulkRecv;
    if (bulk != s->app_lowat) {
      const int v = bulk ? static_cast<int>(kBulkLowat) : 1;
      if (::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v) == 0) {
        s->app_lowat = bulk;
      }
    }
    if (s->app_lowat && (ms < 0 || ms > kBulkWait.count())) {
      ms = static_cast<int>(kBulkWait.count());
    } else if (!s->app_lowat) {
      // Idle input: wait without the receive chunk (an idle path holds none, as when the io
      // thread reads it into the slot's small buffer).
      sp = engine::RecvSpace{};
      lk.lock();
      (void)core_->release_recv_space(s->id);
      lk.unlock();
    }
    pollfd p[2] = {{fd, POLLIN, 0}, {app_wake_.get(), POLLIN, 0}};
    const int rc = ::poll(p, 2, ms);
    expired = rc == 0 && d != kNoDeadline && Clock::now() >= d;
    if (rc == 0 && s->app_lowat && !expired) {
      n = ::recv(fd, sp.space.data(), sp.space.size(), MSG_DONTWAIT);
      err = n < 0 ? errno : 0;
      if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
        s->app_last = 0;  // idle: wake for any byte again
      }
    }
  }
  if (n > 0) {
    s->app_last = static_cast<std::size_t>(n);
  }
  lk.lock();
  s->app_busy = false;
  if (app_woken_) {
    std::uint64_t v = 0;
    (void)::read(app_wake_.get(), &v, sizeof v);
    app_woken_ = false;
  }
  if (s->close_deferred) {
    // Closed by the io thread while this thread was in recv/poll on it: close it there now.
    s->close_deferred = false;
    asio::post(io(), [s] { s->stream->close(); });
    return !expired;
  }
  if (s->closed) {
    return !expired;
  }
  if (n > 0) {
    direct_rx_bytes_ += static_cast<std::uint64_t>(n);
    sp.hold.reset();  // the core holds the chunk (as after a carrier read)
    (void)core_->on_received(s->id, static_cast<std::size_t>(n), Clock::now());
    // What the io thread would do after a read, when there is anything: events (a path went
    // down, the flow ended), frames to send (an ACK is due), an earlier deadline to arm, a
    // writer the input gave room.
    bool service = core_->has_events();
    for (const auto& [id, sl] : slots_) {
      service = service || core_->wants_transmit(id);
    }
    if (!service) {
      const auto next = core_->next_deadline();
      service = next && (!armed_ || round_up_to_tick(*next) < *armed_);
    }
    if (service) {
      request_service_locked();
    }
    if (write_waiters_ > 0 && core_->write_ready(write_want_)) {
      write_cv.notify_all();
    }
  } else if (n == 0 || (err != EAGAIN && err != EWOULDBLOCK && err != EINTR)) {
    // The carrier ended or failed: the io thread reads it again and fails the path.
    s->no_offer = true;
    return_input_locked(s);
  }
  return !expired;
}

}  // namespace rendr::detail
