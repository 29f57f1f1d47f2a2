// SPDX-License-Identifier: Apache-2.0
// ListenerCore (private): the state behind a Listener - its BridgeTable, accept queues,
// admission control and sockets - split by role:
//   listener.cpp          the Listener API, flows leaving the table, eviction (make_room)
//   listener_tcp.cpp      listen_tcp: accepting carriers and reading their first frame
//   listener_udpflow.cpp  listen_udpflow: the shared socket, paths by udpflow id
//   listener_quic.cpp     listen_quic: the shared socket, QUIC connections by connection id
#pragma once

#include <rendr/engine/listener.hpp>

#include "admission.hpp"
#include "carriers.hpp"
#include "driver.hpp"

#include <rendr/engine/errors.hpp>

#include <rendr/engine/core/bridge.hpp>
#include <rendr/engine/core/frame_cache.hpp>
#include <rendr/engine/core/listener_key.hpp>

#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include <malloc.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>

namespace rendr::detail {

using engine::Clock;
using engine::Id128;

struct QuicAddr;  // quic_conn.hpp

inline constexpr auto kRetryStep = std::chrono::milliseconds(20);
inline constexpr auto kRetryWindow = std::chrono::milliseconds(500);
// accept() out of descriptors or memory: the connection stays queued and the listening socket
// readable, so retrying at once spins (25 000 failed calls a second); pause, doubling.
inline constexpr auto kAcceptPauseMin = std::chrono::milliseconds(50);
inline constexpr auto kAcceptPauseMax = std::chrono::milliseconds(1000);

inline constexpr std::size_t kTrimFlows = 256;

inline bool accept_resource_error(std::error_code ec) {
  // asio reports errno in its own category ("asio.system"), which compares unequal to errc.
  if (ec.category() != asio::system_category() && ec.category() != std::system_category() &&
      ec.category() != std::generic_category()) {
    return false;
  }
  const int e = ec.value();
  return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}
// Largest HELLO / BRIDGE_TAG: header + 48-byte payload + str8 name + key block.
inline constexpr std::size_t kMaxFirstFrame =
    engine::kHeaderSize + 48 + 1 + engine::kMaxName + engine::kKeyAuthSize;

inline SourceKey key_of(const asio::ip::address& a) {
  if (a.is_v4()) {
    const auto b = a.to_v4().to_bytes();
    return source_key(b);
  }
  const auto b = a.to_v6().to_bytes();
  return source_key(b);
}

inline AdmissionLimits admission_limits(const ListenOptions& o) {
  AdmissionLimits l;
  l.flows = o.capacity;
  l.unaccepted = o.backlog;
  l.half_open_per_source = o.max_half_open_per_source;
  l.pending_carriers = o.max_pending_carriers;
  l.pending_per_source = o.max_pending_per_source;
  l.first_frame_timeout = o.first_frame_timeout;
  return l;
}

inline Id128 first_frame_id(const engine::FirstFrame& f) {
  if (const auto* h = std::get_if<engine::Hello>(&f)) {
    return h->flow_id;
  }
  return std::get<engine::BridgeTag>(f).bridge_id;
}

class ListenerCore : public std::enable_shared_from_this<ListenerCore> {
 public:
  ListenerCore(std::shared_ptr<IoRuntime> runtime, ListenOptions options, engine::BridgeTable t,
               bool is_udp)
      : rt(std::move(runtime)),
        opts(std::move(options)),
        udp(is_udp),
        table(std::move(t)),
        adm(admission_limits(opts)) {
    if (!opts.listener_key.empty()) {
      keys.emplace(opts.listener_key, opts.key_max_skew, opts.key_replay_capacity);
    }
  }

  std::shared_ptr<IoRuntime> rt;
  ListenOptions opts;
  bool udp;
  std::string local;

  // io thread only
  engine::BridgeTable table;
  std::optional<engine::KeyChecker> keys;  // a keyed listener
  std::optional<asio::ip::tcp::acceptor> acceptor;
  std::optional<asio::steady_timer> accept_timer;
  std::chrono::milliseconds accept_pause{0};
  std::shared_ptr<asio::ip::udp::socket> usock;
  std::map<UdpFlowId, std::shared_ptr<UdpServerPathState>> upaths;
  std::vector<std::byte> ubuf;

  // guarded by mu
  mutable std::mutex mu;
  std::condition_variable cv;
  std::map<Id128, std::weak_ptr<FlowDriver>> drivers;
  std::deque<std::shared_ptr<FlowDriver>> stream_q;
  std::deque<std::shared_ptr<FlowDriver>> packet_q;
  // Listener::set_accept_handler / set_packet_accept_handler: flows of that kind go to it (io
  // thread) instead of waiting for accept(); handler_posted: a hand_out is posted, not run yet.
  std::function<void(std::shared_ptr<FlowDriver>)> stream_handler;
  std::function<void(std::shared_ptr<FlowDriver>)> packet_handler;
  bool handler_posted = false;
  bool closed = false;
  ListenerStats counters;
  std::size_t peak_flows = 0;  // io thread: table size since the last malloc_trim
  std::size_t idle_peak = 0;   // io thread: table size since the table was last empty for 1 s
  // Which flows and waiting carriers to keep when flooded; its flows' accepted state changes
  // together with the accept queues, under |mu|.
  Admission adm;

  std::shared_ptr<FlowDriver> find_driver(const Id128& id) {
    std::lock_guard lk(mu);
    auto it = drivers.find(id);
    return it == drivers.end() ? nullptr : it->second.lock();
  }

  // on_flow_gone runs (posted) when a server driver was destroyed.
  void on_flow_gone(const Id128& id);

  // attach handles an accepted first frame (io thread). |attach_carrier| registers the carrier
  // on the driver (its mutex held). Returns the rejection reply to send, if any, and whether the
  // carrier was taken; nullopt result = retry later.
  struct Outcome {
    bool taken = false;
    bool retry = false;
    std::vector<std::byte> reply;
  };
  // The frame cache is emptied by flow timers once idle (5 s); with no flow left nobody would
  // call it, and the buffers the ended flows gave back (up to its 64 MiB bound) stayed.
  std::optional<asio::steady_timer> cache_timer;
  bool cache_timer_armed = false;
  void trim_cache_while_idle();

  // make_room evicts half-open flows until a new flow from |src| fits (io thread); false =
  // refused (only live flows left). An evicted flow leaves the table at once, also when the
  // application still holds its Conn (which then reads errc::evicted).
  bool make_room(const SourceKey& src);

  // take_queued_locked removes flow |id| from the accept queues (it was never accepted).
  std::shared_ptr<FlowDriver> take_queued_locked(const Id128& id) {
    for (auto* q : {&stream_q, &packet_q}) {
      for (auto it = q->begin(); it != q->end(); ++it) {
        if ((*it)->core().flow_id() == id) {
          auto d = std::move(*it);
          q->erase(it);
          return d;
        }
      }
    }
    return nullptr;
  }

  // key_allows: a keyed listener's verdict on a first frame (refusals counted).
  bool key_allows(std::span<const std::byte> frame, const engine::FirstFrame& ff);

  // accept_first: |key_checked| is set once the frame passed the listener key (a carrier
  // whose BRIDGE_TAG is retried is not checked again: its tag would count as replayed).
  template <typename Attach>
  Outcome accept_first(std::span<const std::byte> frame, const engine::PathOptions& popts,
                       bool final_attempt, const SourceKey& src, bool& key_checked,
                       Attach&& attach_carrier) {
    Outcome out;
    auto ff = engine::classify_first_frame(frame);
    if (!ff) {
      return out;  // not rendr: close without a word
    }
    if (keys && !key_checked) {
      if (!key_allows(frame, *ff)) {
        return out;  // a stranger: close without a word, nothing allocated
      }
      key_checked = true;
    }
    const Id128 id = first_frame_id(*ff);
    auto drv = find_driver(id);
    const auto now = Clock::now();
    if (drv) {
      std::unique_lock dl(drv->mu);
      auto r = table.accept(frame, popts, now, final_attempt);
      if (auto* a = std::get_if<engine::BridgeAttached>(&r)) {
        attach_carrier(*drv, a->path);
        out.taken = true;
      } else if (auto* rej = std::get_if<engine::BridgeRejected>(&r)) {
        out.reply = std::move(rej->reply);
      } else {
        out.retry = true;
      }
      return out;
    }
    if (table.find(id) != nullptr) {
      return out;  // a flow whose application is gone, awaiting removal
    }
    {
      std::lock_guard lk(mu);
      if (closed && std::holds_alternative<engine::Hello>(*ff)) {
        return out;
      }
    }
    if (const auto* h = std::get_if<engine::Hello>(&*ff)) {
      // Only a HELLO the table would take may evict anyone (not a kind this listener refuses).
      const bool packet = (h->caps & engine::kCapsPacketMode) != 0;
      if ((packet ? opts.accept_packet : opts.accept_stream) && !make_room(src)) {
        return out;  // only live flows: refused like a full table, without a word
      }
    }
    auto r = table.accept(frame, popts, now, final_attempt);
    if (auto* rej = std::get_if<engine::BridgeRejected>(&r)) {
      out.reply = std::move(rej->reply);
      return out;
    }
    if (std::holds_alternative<engine::BridgeRetry>(r)) {
      out.retry = true;
      return out;
    }
    const auto& a = std::get<engine::BridgeAttached>(r);
    engine::FlowCore* core = table.find(a.flow_id);
    if (!a.new_flow || core == nullptr) {
      return out;
    }
    std::weak_ptr<ListenerCore> weak = shared_from_this();
    const Id128 fid = a.flow_id;
    auto self = shared_from_this();
    auto driver = std::make_shared<FlowDriver>(rt, core, self, [self, fid] {
      asio::post(self->rt->io(), [self, fid] { self->on_flow_gone(fid); });
    });
    const bool packet = core->packet_mode();
    std::size_t max_payload = udp ? kUdpFlowMaxFrame - engine::kHeaderSize : opts.flow.max_payload;
    if (popts.max_frame > engine::kHeaderSize) {
      max_payload = std::min(max_payload, popts.max_frame - engine::kHeaderSize);
    }
    driver->set_max_payload(max_payload);
    // The driver keeps this listener alive, so the hook may point at it.
    driver->set_carriers_hook([this, fid](std::size_t n) {
      std::lock_guard lk(mu);
      adm.carriers(fid, n);
    });
    {
      std::unique_lock dl(driver->mu);
      if (opts.follow_client_mode) {
        const std::uint32_t hint =
            (core->stats().peer_caps & engine::kCapsModeMask) >> engine::kCapsModeShift;
        if (hint == 2 || hint == 3) {
          (void)core->set_mode(static_cast<engine::Mode>(hint));
        }
      }
      if (core->l3_identity_pending()) {
        // accept() hands out the flow once its L3 identity record is in (or it died).
        driver->hold_for_accept_locked([this] {
          std::lock_guard lk(mu);
          cv.notify_all();
          post_hand_out_locked();
        });
      }
      attach_carrier(*driver, a.path);
    }
    {
      std::lock_guard lk(mu);
      drivers[fid] = driver;
      (packet ? packet_q : stream_q).push_back(std::move(driver));
      adm.flow_added(fid, src, 1);
      post_hand_out_locked();
    }
    cv.notify_all();
    out.taken = true;
    return out;
  }

  // post_hand_out_locked (mu held): with an accept handler set, the acceptable stream flows go
  // to it from a posted step (never from under a driver's lock, where the release hook runs).
  void post_hand_out_locked() {
    if (handler_posted || ((!stream_handler || stream_q.empty()) &&
                           (!packet_handler || packet_q.empty()))) {
      return;
    }
    handler_posted = true;
    asio::post(rt->io(), [self = shared_from_this()] { self->hand_out(); });
  }

  // hand_out (io thread): takes what accept() / accept_packet() would return, in order, and
  // passes it on.
  void hand_out() {
    std::vector<std::shared_ptr<FlowDriver>> streams;
    std::vector<std::shared_ptr<FlowDriver>> packets;
    std::vector<std::shared_ptr<FlowDriver>> refused;
    std::function<void(std::shared_ptr<FlowDriver>)> sh;
    std::function<void(std::shared_ptr<FlowDriver>)> ph;
    {
      std::lock_guard lk(mu);
      handler_posted = false;
      sh = stream_handler;
      ph = packet_handler;
      while (auto d = sh ? take_next_locked(stream_q, refused) : nullptr) {
        streams.push_back(std::move(d));
      }
      while (auto d = ph ? take_next_locked(packet_q, refused) : nullptr) {
        packets.push_back(std::move(d));
      }
    }
    refused.clear();  // released outside mu
    for (auto& d : streams) {
      sh(std::move(d));
    }
    for (auto& d : packets) {
      ph(std::move(d));
    }
  }

  // take_next_locked (mu held): |q|'s first flow accept() may hand out (counted accepted),
  // or null; flows whose L3 identity was refused leave |q| into |refused| (released after
  // mu), flows still waiting for theirs stay.
  std::shared_ptr<FlowDriver> take_next_locked(std::deque<std::shared_ptr<FlowDriver>>& q,
                                               std::vector<std::shared_ptr<FlowDriver>>& refused) {
    for (auto it = q.begin(); it != q.end();) {
      auto& d = *it;
      if (d->accept_held()) {
        ++it;  // its L3 identity record is not in yet
        continue;
      }
      auto taken = std::move(d);
      it = q.erase(it);
      if (taken->accept_refused()) {
        refused.push_back(std::move(taken));
        continue;
      }
      adm.accepted(taken->core().flow_id());  // immutable: no need for the driver's lock
      return taken;
    }
    return nullptr;
  }

  // --- tcp ---
  struct PendingTcp {
    explicit PendingTcp(asio::ip::tcp::socket s, asio::io_context& io)
        : sock(std::move(s)), timer(io) {}
    asio::ip::tcp::socket sock;
    asio::steady_timer timer;  // BRIDGE_TAG retries
    engine::StreamDeframer deframer;
    // Sized for one first frame: what follows it stays in the socket for the flow to read
    // (a flood of idle carriers holds 0.3 KiB each here, not 64).
    std::vector<std::byte> buf = std::vector<std::byte>(2 + kMaxFirstFrame);
    std::vector<std::byte> first;
    std::vector<std::byte> rest;  // bytes after the first frame (handed to the flow)
    std::vector<std::byte> reply;
    Clock::time_point started = Clock::now();
    SourceKey src{};
    Admission::CarrierId cid = 0;
    bool key_checked = false;
    std::uint16_t prefix = 0;
    std::size_t prefix_seen = 0;
    bool done = false;
  };
  // Carriers waiting for their first frame (io thread), by admission id.
  std::map<Admission::CarrierId, std::weak_ptr<PendingTcp>> waiting;
  std::optional<asio::steady_timer> first_frame_timer;
  bool first_frame_armed = false;

  void do_accept();

  void pause_accepting();

  void start_pending(asio::ip::tcp::socket sock);

  // finish_pending: |p| no longer waits (its first frame was handled, or it failed); |close|
  // closes its socket.
  void finish_pending(const std::shared_ptr<PendingTcp>& p, bool close);

  // drop_waiting closes a waiting carrier admission already forgot (pushed out or overdue).
  void drop_waiting(Admission::CarrierId id);

  // One timer for every waiting carrier's first-frame timeout (they expire in arrival order).
  void arm_first_frame_timer();

  void read_first(const std::shared_ptr<PendingTcp>& p);

  void handle_first_tcp(const std::shared_ptr<PendingTcp>& p, bool final_attempt);

  // --- udpflow ---
  void do_recv();

  void drain_udp();

  // --- quic (listener_quic.cpp) ---
  struct QuicState;
  std::shared_ptr<QuicState> quic;  // io thread
  std::atomic<bool> quic_added{false};
  void quic_recv();
  void quic_drain();
  void quic_packet(std::span<const std::byte> pkt, const QuicAddr& from);
  // quic_drop closes a quic carrier admission forgot (pushed out or overdue); false = not one.
  bool quic_drop(Admission::CarrierId id);
  void quic_close_pending();
};

// Shared by listen_tcp and listen_udpflow.
[[nodiscard]] engine::BridgeConfig bridge_config(const ListenOptions& o, bool udp);
[[nodiscard]] Status check_limits(const ListenOptions& o);
[[nodiscard]] std::shared_ptr<IoRuntime> runtime_for(asio::io_context* io);

}  // namespace rendr::detail
