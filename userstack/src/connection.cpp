// SPDX-License-Identifier: Apache-2.0
// Connection: lwIP callbacks feed a per-connection receive queue (never refused: a refused
// pbuf is only retried every 250 ms); the window reopens as read() drains it.
#include "stack_impl.hpp"

#include <rendr/userstack/snapshot.hpp>

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace rendr::userstack {

Connection::Impl::Impl(Stack::Impl& stack, tcp_pcb* pcb, FourTuple tuple)
    : stack_(stack), pcb_(pcb), tuple_(std::move(tuple)) {}

Connection::Impl::~Impl() = default;

void Connection::Impl::attach(tcp_pcb* pcb) {
  pcb_ = pcb;
  tcp_arg(pcb, this);
  tcp_recv(pcb, &Impl::on_recv);
  tcp_sent(pcb, &Impl::on_sent);
  tcp_err(pcb, &Impl::on_err);
}

tcp_pcb* Connection::Impl::detach() {
  tcp_pcb* pcb = pcb_;
  if (pcb != nullptr) {
    tcp_arg(pcb, nullptr);
    tcp_recv(pcb, nullptr);
    tcp_sent(pcb, nullptr);
    tcp_err(pcb, nullptr);
  }
  pcb_ = nullptr;
  return pcb;
}

void Connection::Impl::ensure_efd_locked() const {
  if (efd_) {
    return;
  }
  efd_ = UniqueFd(::eventfd(pending_ ? 1 : 0, EFD_NONBLOCK | EFD_CLOEXEC));
  pending_ = false;
}

void Connection::Impl::signal() {
  std::lock_guard lk(efd_mu_);
  if (waker_) {
    waker_();
  } else if (efd_) {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(efd_.get(), &one, sizeof one);
  } else {
    pending_ = true;
  }
}

err_t Connection::Impl::on_recv(void* arg, tcp_pcb* /*pcb*/, pbuf* p, err_t /*err*/) {
  auto* self = static_cast<Impl*>(arg);
  if (self == nullptr) {
    if (p != nullptr) {
      pbuf_free(p);
    }
    return ERR_OK;
  }
  if (p == nullptr) {
    self->peer_fin_ = true;
    // FIN_WAIT2 + FIN: lwIP moved the PCB to TIME_WAIT and will free it on its own later,
    // without a callback: let go of it now (the shim keeps the flow's offset for its ACKs).
    if (self->pcb_ != nullptr && self->pcb_->state == TIME_WAIT) {
      self->detach();
    }
  } else {
    if (self->rx_head_ > 0 && self->rx_head_ >= self->rx_.size() / 2) {
      self->rx_.erase(self->rx_.begin(),
                      self->rx_.begin() + static_cast<std::ptrdiff_t>(self->rx_head_));
      self->rx_head_ = 0;
    }
    std::size_t old = self->rx_.size();
    self->rx_.resize(old + p->tot_len);
    pbuf_copy_partial(p, self->rx_.data() + old, p->tot_len, 0);
    pbuf_free(p);
  }
  self->signal();
  return ERR_OK;
}

err_t Connection::Impl::on_sent(void* arg, tcp_pcb* /*pcb*/, u16_t /*len*/) {
  if (auto* self = static_cast<Impl*>(arg); self != nullptr) {
    self->push_pending();
    if (self->pcb_ != nullptr && self->pcb_->state == TIME_WAIT) {
      self->detach();  // our FIN acked after the peer's (FIN_WAIT1/CLOSING -> TIME_WAIT)
    }
    self->signal();
  }
  return ERR_OK;
}

void Connection::Impl::push_pending() {
  if (pcb_ == nullptr) {
    return;
  }
  bool wrote = false;
  while (tx_pending_size() > 0) {
    std::size_t n = std::min<std::size_t>({tx_pending_size(), tcp_sndbuf(pcb_), 0xffff});
    err_t e = ERR_MEM;
    while (n > 0) {
      e = tcp_write(pcb_, tx_pending_.data() + tx_pending_head_, static_cast<u16_t>(n),
                    TCP_WRITE_FLAG_COPY);
      if (e != ERR_MEM) {
        break;
      }
      n /= 2;
    }
    if (e != ERR_OK || n == 0) {
      break;
    }
    tx_pending_head_ += n;
    wrote = true;
  }
  if (tx_pending_size() == 0) {
    tx_pending_.clear();
    tx_pending_head_ = 0;
    if (fin_pending_ && tcp_shutdown(pcb_, 0, 1) == ERR_OK) {
      fin_pending_ = false;
      wrote = true;
    }
  }
  if (wrote) {
    tcp_output(pcb_);
  }
}

void Connection::Impl::on_err(void* arg, err_t err) {
  // The PCB is already freed by lwIP. ERR_CLSD is the normal end (our FIN acked after the
  // peer's: LAST_ACK -> CLOSED), not a reset.
  if (auto* self = static_cast<Impl*>(arg); self != nullptr) {
    self->pcb_ = nullptr;
    self->reset_ = err != ERR_CLSD;
    self->stack_.flows_.erase(self->tuple_);
    self->signal();
  }
}

Connection::Connection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Connection::~Connection() { close(); }

const FourTuple& Connection::tuple() const { return impl_->tuple_; }
int Connection::event_fd() const {
  std::lock_guard lk(impl_->efd_mu_);
  impl_->ensure_efd_locked();
  return impl_->efd_.get();
}

void Connection::clear_event() {
  std::lock_guard lk(impl_->efd_mu_);
  impl_->pending_ = false;
  if (impl_->efd_) {
    std::uint64_t v = 0;
    [[maybe_unused]] ssize_t r = ::read(impl_->efd_.get(), &v, sizeof v);
  }
}

void Connection::set_waker(std::function<void()> w) {
  std::lock_guard lk(impl_->efd_mu_);
  impl_->waker_ = std::move(w);
  if (impl_->waker_ && impl_->pending_) {
    impl_->pending_ = false;
    impl_->waker_();
  } else if (!impl_->waker_) {
    impl_->ensure_efd_locked();  // events go to the fd again
  }
}

Result<std::size_t> Connection::read(std::span<std::byte> buf) {
  CoreLock lock;
  Impl& s = *impl_;
  std::size_t n = std::min(buf.size(), s.rx_size());
  if (n > 0) {
    std::memcpy(buf.data(), s.rx_.data() + s.rx_head_, n);
    s.rx_head_ += n;
    if (s.rx_head_ == s.rx_.size()) {
      s.rx_.clear();
      s.rx_head_ = 0;
    }
    // Reopen the window only while the peer may still send: after its FIN a window update
    // reaches a socket that may be gone already and draws a RST.
    if (s.pcb_ != nullptr && (s.pcb_->state == ESTABLISHED || s.pcb_->state == FIN_WAIT_1 ||
                              s.pcb_->state == FIN_WAIT_2 || s.pcb_->state == CLOSE_WAIT)) {
      for (std::size_t left = n; left > 0;) {
        auto chunk = static_cast<u16_t>(std::min<std::size_t>(left, 0xffff));
        tcp_recved(s.pcb_, chunk);
        left -= chunk;
      }
    }
    return n;
  }
  if (buf.empty()) {
    return std::size_t{0};
  }
  if (s.snapshotted_) {
    return make_error(std::errc::not_connected,
                      "userstack " + s.tuple_.to_string() + ": connection moved (snapshotted)");
  }
  if (s.peer_fin_) {
    return std::size_t{0};
  }
  if (s.reset_ || s.pcb_ == nullptr) {
    return make_error(std::errc::connection_reset,
                      "userstack " + s.tuple_.to_string() + ": connection reset");
  }
  return make_error(std::errc::resource_unavailable_try_again, "userstack: no data yet");
}

Result<std::size_t> Connection::write(std::span<const std::byte> data) {
  CoreLock lock;
  Impl& s = *impl_;
  if (s.pcb_ == nullptr) {
    if (s.snapshotted_) {
      return make_error(std::errc::not_connected,
                        "userstack " + s.tuple_.to_string() + ": connection moved (snapshotted)");
    }
    if (!s.reset_) {
      return make_error(std::errc::broken_pipe,
                        "userstack " + s.tuple_.to_string() + ": connection ended");
    }
    return make_error(std::errc::connection_reset,
                      "userstack " + s.tuple_.to_string() + ": connection reset");
  }
  if (s.shut_wr_) {
    return make_error(std::errc::broken_pipe, "userstack: write after shutdown_write");
  }
  if (s.tx_pending_size() > 0) {
    s.push_pending();
    if (s.tx_pending_size() > 0) {
      return make_error(std::errc::resource_unavailable_try_again, "userstack: send buffer full");
    }
  }
  std::size_t room = tcp_sndbuf(s.pcb_);
  std::size_t n = std::min<std::size_t>({data.size(), room, 0xffff});
  if (data.empty()) {
    return std::size_t{0};
  }
  while (n > 0) {
    err_t e = tcp_write(s.pcb_, data.data(), static_cast<u16_t>(n), TCP_WRITE_FLAG_COPY);
    if (e == ERR_OK) {
      tcp_output(s.pcb_);
      return n;
    }
    if (e != ERR_MEM) {
      return make_error(std::errc::connection_reset,
                        "userstack " + s.tuple_.to_string() + ": tcp_write failed");
    }
    // Too many segments queued (TCP_SND_QUEUELEN): try a smaller piece, else wait.
    n /= 2;
  }
  tcp_output(s.pcb_);
  return make_error(std::errc::resource_unavailable_try_again, "userstack: send buffer full");
}

Status Connection::shutdown_write() {
  CoreLock lock;
  Impl& s = *impl_;
  if (s.pcb_ == nullptr) {
    return make_error(std::errc::connection_reset, "userstack: connection reset");
  }
  if (s.shut_wr_) {
    return {};
  }
  if (s.tx_pending_size() > 0) {
    s.shut_wr_ = true;
    s.fin_pending_ = true;
    return {};
  }
  if (tcp_shutdown(s.pcb_, 0, 1) != ERR_OK) {
    return make_error(std::errc::no_buffer_space, "userstack: cannot queue FIN");
  }
  s.shut_wr_ = true;
  tcp_output(s.pcb_);
  return {};
}

void Connection::abort() {
  CoreLock lock;
  Impl& s = *impl_;
  if (tcp_pcb* pcb = s.detach(); pcb != nullptr) {
    // The RST leaves through the shim while it still knows the flow (its sequence offset):
    // erased first, the RST carried lwIP's own sequence numbers and the peer ignored it (a
    // client that had nothing more to send then waited for its own timeout).
    tcp_abort(pcb);
    s.stack_.flows_.erase(s.tuple_);
  }
  s.reset_ = true;
}

void Connection::close() {
  if (!impl_) {
    return;
  }
  CoreLock lock;
  Impl& s = *impl_;
  tcp_pcb* pcb = s.detach();
  if (pcb == nullptr) {
    return;
  }
  // lwIP takes over the PCB (FIN handshake, TIME_WAIT); the flow's offset stays in the shim
  // for it. Unread data makes lwIP answer with RST, as a kernel socket would.
  if (tcp_close(pcb) != ERR_OK) {
    tcp_abort(pcb);  // as in abort(): the RST first, with the flow's offset
    s.stack_.flows_.erase(s.tuple_);
  }
}

ConnectionInfo Connection::info() const {
  CoreLock lock;
  const Impl& s = *impl_;
  ConnectionInfo ci;
  ci.tuple = s.tuple_;
  ci.recv_queue = static_cast<std::uint32_t>(s.rx_size());
  if (const FlowEntry* f = s.stack_.flows_.find(s.tuple_); f != nullptr) {
    ci.seq_offset = f->offset;
  }
  if (s.pcb_ != nullptr) {
    ci.state = kernel_state(static_cast<int>(s.pcb_->state)).value_or(TcpState::close);
    ci.send_queue =
        s.pcb_->snd_lbb - s.pcb_->lastack + static_cast<std::uint32_t>(s.tx_pending_size());
    ci.mss = s.pcb_->mss;
  }
  return ci;
}

bool Connection::alive() const {
  CoreLock lock;
  return impl_->pcb_ != nullptr;
}

}  // namespace rendr::userstack
