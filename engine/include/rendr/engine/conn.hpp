// SPDX-License-Identifier: Apache-2.0
// Conn (byte stream), PacketConn (one write = one packet) and their common Admin surface: the
// application's handle on one rendr flow, whatever happens to the paths under it.
//
// Threads: every method may be called from any application thread (a flow's state is guarded
// by one mutex); the flow itself runs on the engine's io_context thread (the Dialer's or
// Listener's), where on_migrate callbacks and the async face's completions run (completions are
// dispatched to the handler's associated executor). Blocking calls wait on a condition variable,
// never on the io thread: do not call them from an on_migrate callback or an io handler.
//
// Errors (engine::errc unless stated): migrations never surface. A clean peer close (BYE
// normal) is EOF: read returns 0 (Conn) / false (PacketConn) after every earlier byte. The end
// of a flow for any other reason is an error, never EOF: migration_budget_exceeded (all paths
// gone for the whole budget), zombie, peer_closed, peer_proto_version, recv_window_exceeded,
// closed (used after close()). A Deadline that passes is std::errc::timed_out; the flow is
// unaffected.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/carrier.hpp>
#include <rendr/engine/types.hpp>

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/buffer.hpp>
#include <asio/dispatch.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace rendr {

using engine::Mode;
using engine::PathId;

namespace detail {
class FlowDriver;
}

struct MigrateEvent {
  PathId from = 0;  // 0: the flow had no path (it was migrating)
  PathId to = 0;
  engine::MigrateCause cause = engine::MigrateCause::death;
};
using MigrateCallback = std::function<void(const MigrateEvent&)>;

// Admin: observation and control of one flow (Conn and PacketConn both are one).
class Admin {
 public:
  Admin(const Admin&) = delete;
  Admin& operator=(const Admin&) = delete;

  // migrate makes |path| active after replaying every unacknowledged frame on it.
  // Errors: unknown_path, not_ready (path not attached yet).
  [[nodiscard]] Status migrate(PathId path);
  [[nodiscard]] PathId active_path() const;
  // add_path (dialing side) dials |spec| with the Dialer's factories and attaches it with
  // BRIDGE_TAG; returns once the path is ready. Errors: the dial error, wrong_side (server),
  // path_dead / bridge_rejected (refused by the peer), std::errc::timed_out.
  [[nodiscard]] Result<PathId> add_path(const PathSpec& spec,
                                        Deadline deadline = deadline_in(std::chrono::seconds(10)));
  // remove_path fails over first when |path| is active. Errors: unknown_path, last_path.
  [[nodiscard]] Status remove_path(PathId path);
  [[nodiscard]] engine::FlowState state() const;
  [[nodiscard]] Mode mode() const;
  // set_mode: prime <-> race and prime <-> bond; race <-> bond is mode_switch_illegal. It
  // changes how this side sends (docs/modes.md: the peer's direction follows the dial-time mode).
  [[nodiscard]] Status set_mode(Mode m);
  [[nodiscard]] std::size_t recv_queue_hwm() const;
  [[nodiscard]] std::uint64_t recv_dups() const;
  [[nodiscard]] std::uint64_t bond_stuck_skips() const;
  [[nodiscard]] std::uint64_t migration_count() const;
  // on_migrate registers |cb| for every active-path change (explicit, death, quality); it runs
  // on the io thread. Returns an id for cancel_on_migrate.
  std::uint64_t on_migrate(MigrateCallback cb);
  void cancel_on_migrate(std::uint64_t id);
  // stats: one coherent snapshot (taken under the flow's lock), carriers' addresses included.
  [[nodiscard]] engine::FlowStats stats() const;
  [[nodiscard]] engine::Id128 flow_id() const;
  [[nodiscard]] engine::Side side() const;
  // l3_identity: the flow's L3 identity (docs/wire.md "L3 identity"): on the accepting side the
  // record the dialer sent (a listener hands out such a flow only once the record is in), on
  // the dialing side its DialOptions::l3_identity; empty when the flow has none.
  [[nodiscard]] std::optional<engine::L3Identity> l3_identity() const;
  // shutdown_write half-closes the flow: the peer reads EOF after every byte (packet) written
  // so far, while reads here and the peer's writes go on; lossless across path deaths and
  // migrations (docs/wire.md "Half-close"). Later writes fail with closed. Idempotent.
  // Errors: peer_unsupported (the peer did not negotiate half-close: nothing was closed,
  // both directions stay open), closed (after close()), the flow's end.
  [[nodiscard]] Status shutdown_write();
  // close sends BYE(normal) and waits until the peer acknowledged it or graceful_close_timeout
  // (2 s; error graceful_close_timeout), then closes every carrier. Idempotent; the destructor
  // calls it. Called on the flow's io thread (a handle dropped in an io handler) it does not
  // wait - that would wait for itself: the flow closes the same way in the background (as with
  // async_close) and close returns at once.
  [[nodiscard]] Status close();
  // refuse ends the flow as refused (docs/wire.md "Refusal"): a REFUSE carrying |code| and
  // |detail| (cut to 255 bytes) follows everything written, and the call waits for it like
  // close(). The peer's flow ends with flow_refused after the bytes before it; its
  // peer_refusal() says why. A peer without the feature (caps bit 15) gets BYE(app_request)
  // instead (peer_closed there). On a flow already closing or ended it is close().
  [[nodiscard]] Status refuse(engine::RefusalCode code, std::string_view detail = {});
  // async_close / async_refuse: close() / refuse() without blocking, for code running on the
  // io thread (an event-driven relay). |done| runs once, on the io thread, with what the
  // blocking call would return, once the flow ended and its carriers were let go; the handle
  // may be destroyed from |done| (its destructor's close() then returns at once).
  void async_close(std::function<void(Status)> done);
  void async_refuse(engine::RefusalCode code, std::string_view detail,
                    std::function<void(Status)> done);
  // peer_refusal: the REFUSE the peer ended this flow with (its read/write then failed with
  // flow_refused); empty otherwise.
  [[nodiscard]] std::optional<engine::Refusal> peer_refusal() const;
  // rebind_path moves |path| to a new local address ("ip:port", port 0 = any port) in place:
  // a quic path (dialing side) migrates its QUIC connection (RFC 9000 section 9), so the engine
  // sees the same path - no engine migration, nothing replayed. Must not be called on the io
  // thread. Errors: unknown_path, not_supported (not a quic path), std::errc::invalid_argument
  // (accepting side, bad address), bind errors, not_connected (handshake not confirmed).
  [[nodiscard]] Status rebind_path(PathId path, const std::string& local);
  // kill_path_for_test closes |path|'s carrier as a transport error would (tests, benches).
  void kill_path_for_test(PathId path);

  using executor_type = asio::io_context::executor_type;
  [[nodiscard]] executor_type get_executor() const;

 protected:
  explicit Admin(std::shared_ptr<detail::FlowDriver> d);
  ~Admin();
  std::shared_ptr<detail::FlowDriver> d_;
};

class Conn : public Admin {
 public:
  explicit Conn(std::shared_ptr<detail::FlowDriver> d) : Admin(std::move(d)) {}
  ~Conn();

  // read_some blocks until at least one byte is available and returns how many it copied;
  // 0 = EOF (peer closed cleanly; never returned for a non-empty |buf| otherwise).
  [[nodiscard]] Result<std::size_t> read_some(std::span<std::byte> buf,
                                              Deadline deadline = kNoDeadline);
  // read fills |buf| completely; a short count means EOF came first.
  [[nodiscard]] Result<std::size_t> read(std::span<std::byte> buf, Deadline deadline = kNoDeadline);
  // write blocks until every byte is in the send window (the replay ledger). On error nothing
  // tells how much was taken: treat the flow as broken.
  [[nodiscard]] Status write(std::span<const std::byte> data, Deadline deadline = kNoDeadline);
  // write_some takes what fits now, waiting only while nothing fits.
  [[nodiscard]] Result<std::size_t> write_some(std::span<const std::byte> data,
                                               Deadline deadline = kNoDeadline);

  // Asio face (AsyncReadStream / AsyncWriteStream): one outstanding read and one outstanding
  // write at a time. EOF completes with asio::error::eof; the flow's end with its engine::errc.
  template <typename MutableBufferSequence, typename Token>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
    asio::mutable_buffer b = first_buffer(buffers);
    return asio::async_initiate<Token, void(std::error_code, std::size_t)>(
        [this, b](auto handler) {
          start_read(std::span<std::byte>(static_cast<std::byte*>(b.data()), b.size()),
                     wrap(std::move(handler)));
        },
        token);
  }
  template <typename ConstBufferSequence, typename Token>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
    asio::const_buffer b = first_buffer(buffers);
    return asio::async_initiate<Token, void(std::error_code, std::size_t)>(
        [this, b](auto handler) {
          start_write(
              std::span<const std::byte>(static_cast<const std::byte*>(b.data()), b.size()),
              wrap(std::move(handler)));
        },
        token);
  }
  // cancel completes pending async operations with asio::error::operation_aborted.
  void cancel();

 private:
  template <typename Seq>
  static auto first_buffer(const Seq& seq) {
    using B = std::decay_t<decltype(*asio::buffer_sequence_begin(seq))>;
    for (auto it = asio::buffer_sequence_begin(seq); it != asio::buffer_sequence_end(seq); ++it) {
      B b = *it;
      if (b.size() != 0) {
        return b;
      }
    }
    return B{};
  }
  template <typename Handler>
  IoHandler wrap(Handler handler) {
    auto ex = asio::get_associated_executor(handler, get_executor());
    auto work = std::make_shared<asio::executor_work_guard<decltype(ex)>>(ex);
    auto h = std::make_shared<Handler>(std::move(handler));
    return [h, work, ex](std::error_code ec, std::size_t n) {
      asio::dispatch(ex, [h, work, ec, n] {
        (*h)(ec, n);
        work->reset();
      });
    };
  }
  void start_read(std::span<std::byte> buf, IoHandler h);
  void start_write(std::span<const std::byte> buf, IoHandler h);
};

class PacketConn : public Admin {
 public:
  explicit PacketConn(std::shared_ptr<detail::FlowDriver> d) : Admin(std::move(d)) {}
  ~PacketConn();

  // write sends |packet| as one packet (never split), blocking while the window is full.
  // Errors: packet_too_large (> max_payload), the flow's end, timed_out.
  [[nodiscard]] Status write(std::span<const std::byte> packet, Deadline deadline = kNoDeadline);
  // read moves the next packet into |out|: true = a packet (possibly empty), false = EOF.
  // Packets arrive reliably, each once, in arrival order (not necessarily send order).
  [[nodiscard]] Result<bool> read(std::vector<std::byte>& out, Deadline deadline = kNoDeadline);
  // max_packet: the largest packet write takes (the flow's max_payload).
  [[nodiscard]] std::size_t max_packet() const;
};

using ConnPtr = std::unique_ptr<Conn>;
using PacketConnPtr = std::unique_ptr<PacketConn>;

}  // namespace rendr
