// SPDX-License-Identifier: Apache-2.0
// userstack — TCP terminated in user space: Debian's lwIP behind a TUN device, so rendr owns the
// whole TCB of every connection routed into the TUN (the fallback migration method: no
// CAP_NET_ADMIN needed once root provisioned the device).
//
//   auto stack = rendr::userstack::Stack::start({.tun = {.name = "rtun0"}});
//   stack.value()->set_accept_handler([](rendr::userstack::ConnectionPtr c) {
//     // c->tuple().local is the address/port the peer dialled (any address routed to the TUN)
//     auto fd = rendr::userstack::bridge(std::move(c));   // the server gets a plain stream fd
//   });
//
// Threads: lwIP keeps its state in globals, so there is ONE Stack per process at a time (a
// second start() fails with EBUSY). start() runs tcpip_init once per process; the Stack owns a
// reader thread that drains the TUN and feeds lwIP. Every raw lwIP call - from the reader
// thread, lwIP's tcpip thread or a Connection method on the caller's thread - holds lwIP's core
// lock. Connection methods may be called from any one thread at a time; the accept handler runs
// on the reader thread WITHOUT the core lock held (it may call Connection methods).
// Connections and bridges must be destroyed before their Stack.
//
// The shim between the TUN and lwIP: accepts TCP to ANY destination address/port (listeners
// are created on demand for each SYN's port), shifts our sequence space by a random per-flow
// offset (lwIP's ISS is predictable), and can freeze a flow: its inbound packets are held
// (bounded) instead of reaching lwIP, and replayed by thaw(). UDP never reaches lwIP: with a
// UDP handler set (set_udp_handler) each unfragmented datagram is handed to it, and inject()
// writes reply packets (udp_packet.hpp builds them) back into the TUN.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/tcp_snapshot.hpp>
#include <rendr/userstack/tcp_packet.hpp>
#include <rendr/userstack/tun_device.hpp>
#include <rendr/userstack/udp_packet.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

namespace rendr::userstack {

class Stack;

// ConnectionInfo — a point-in-time view of one lwIP connection (for status and tests).
struct ConnectionInfo {
  FourTuple tuple;
  TcpState state = TcpState::close;  // mapped to the kernel's numbering
  std::uint32_t send_queue = 0;      // bytes written, not yet acknowledged by the peer
  std::uint32_t recv_queue = 0;      // bytes received, not yet read
  std::uint16_t mss = 0;
  std::uint32_t seq_offset = 0;  // the shim's offset (wire SEQ - lwIP SEQ)
};

// Connection — one accepted (or restored) lwIP connection. Backpressure: data lwIP delivers is
// always taken (never refused) and queued here; the receive window reopens (tcp_recved) only as
// read() drains it. write() takes what lwIP's send buffer has room for.
class Connection {
 public:
  class Impl;
  explicit Connection(std::unique_ptr<Impl> impl);
  ~Connection();  // close(): graceful (FIN), or RST when received data was left unread
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  [[nodiscard]] const FourTuple& tuple() const;
  // event_fd becomes readable (an eventfd, made on first use) whenever data, send space, a FIN
  // or an error arrived. Call clear_event() before retrying a read()/write() that returned
  // EAGAIN.
  [[nodiscard]] int event_fd() const;
  void clear_event();
  // set_waker: from now on an event calls |w| instead of making event_fd readable - for an
  // owner that runs lwIP's input on its own event loop (StackOptions::reader_thread false) and
  // wakes its pending operations there: no eventfd, no fd registration, no write and read per
  // event. |w| runs on the thread feeding lwIP with lwIP's core lock held: it must not call
  // into the Connection or block (post the retry to the event loop). If an event came before,
  // |w| is called once now. An empty |w| goes back to the event fd.
  void set_waker(std::function<void()> w);

  // read copies up to |buf.size()| received bytes. Returns the count; 0 = the peer sent FIN and
  // everything was read. Errors: EAGAIN (nothing yet), ECONNRESET (reset or aborted),
  // ENOTCONN (snapshotted away: the connection lives on elsewhere).
  [[nodiscard]] Result<std::size_t> read(std::span<std::byte> buf);
  // write queues up to |data.size()| bytes for sending and returns how many it took. Errors:
  // EAGAIN (send buffer full: wait for event_fd), EPIPE (after shutdown_write() or the end of
  // the connection), ECONNRESET, ENOTCONN (snapshotted away).
  [[nodiscard]] Result<std::size_t> write(std::span<const std::byte> data);
  // shutdown_write sends our FIN after the queued bytes. Errors: ECONNRESET.
  [[nodiscard]] Status shutdown_write();
  // abort resets the connection (RST) now.
  void abort();
  // close ends it gracefully (see the destructor); idempotent.
  void close();

  [[nodiscard]] ConnectionInfo info() const;
  // alive: the connection still has an lwIP PCB (not reset, not snapshotted away).
  [[nodiscard]] bool alive() const;

 private:
  friend class Stack;  // snapshot/restore reach the PCB through the Impl
  Impl& impl_for_stack() { return *impl_; }
  std::unique_ptr<Impl> impl_;
};
using ConnectionPtr = std::unique_ptr<Connection>;

struct StackOptions {
  TunOptions tun;
  // Sequence offsets are drawn from this seed (0 = from std::random_device).
  std::uint64_t seed = 0;
  // Bounds of each frozen flow's hold queue (packets beyond it are dropped and counted).
  std::size_t hold_max_packets = 4096;
  std::size_t hold_max_bytes = 16U << 20;
  // Segment size lwIP sends with, set on each accepted/restored connection (0 = lwIP's own
  // choice, <= 1460). Larger segments are the lever for throughput toward the local kernel
  // (needs a TUN MTU above it; the peer must accept segments beyond its MSS, as Linux does).
  std::uint16_t send_mss = 0;
  // false: no reader thread - the owner waits for tun_fd() to be readable and calls poll_tun()
  // from its own event loop (one thread), so lwIP's input, the accept handler and the
  // connections' events run on that thread (rendr-tun's ingress runs them on its io thread).
  bool reader_thread = true;
};

struct StackCounters {
  std::uint64_t rx_packets = 0;         // TCP packets read from the TUN and fed to lwIP
  std::uint64_t rx_ignored = 0;         // not IPv4/IPv6 TCP, malformed
  // Of rx_ignored, identified and not carried (docs/tun-ingress.md): ICMP / ICMPv6, IP
  // fragments (IPv4 MF or offset, IPv6 fragment header), UDP.
  std::uint64_t rx_icmp = 0;
  std::uint64_t rx_fragments = 0;
  std::uint64_t rx_udp = 0;  // UDP packets seen (handed to the UDP handler when one is set)
  std::uint64_t rx_bad_checksum = 0;    // partial checksum offsets out of range
  std::uint64_t rx_held = 0;            // held for a frozen flow
  std::uint64_t rx_hold_dropped = 0;    // frozen flow's hold queue full
  std::uint64_t rx_replayed = 0;        // held packets fed by thaw()
  std::uint64_t tx_packets = 0;         // packets written to the TUN
  std::uint64_t tx_held = 0;            // emitted for a frozen flow, held for thaw()
  std::uint64_t tx_discarded = 0;       // held ones a snapshot/take_held made obsolete
  std::uint64_t tx_frozen_dropped = 0;  // frozen flow's outbound hold full
  std::uint64_t tx_errors = 0;
  std::uint64_t tx_injected = 0;  // packets written by inject()
  std::uint64_t accepted = 0;
  std::uint64_t listeners = 0;
  std::uint64_t flows = 0;  // shim entries (pruned every 5 s once lwIP dropped the PCB)
  // lwIP connections now (established, closing ones lwIP finishes alone, TIME_WAIT).
  std::uint64_t tcp_pcbs = 0;
};

class Stack {
 public:
  class Impl;
  // start attaches the TUN (see TunDevice::attach for its errors), initialises lwIP once per
  // process and starts the reader thread. Errors: EBUSY (a Stack is already running in this
  // process), TUN errors.
  [[nodiscard]] static Result<std::unique_ptr<Stack>> start(const StackOptions& opts);
  ~Stack();
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  // set_accept_handler: new connections are passed to |h| (on the reader thread, core lock not
  // held). Without a handler they queue for accept().
  void set_accept_handler(std::function<void(ConnectionPtr)> h);
  // set_udp_handler: every unfragmented UDP datagram read from the TUN is passed to |h| (on the
  // reader thread, core lock not held: |h| must not block, it delays every packet after it)
  // instead of being counted as ignored. An empty |h| restores the default (counted, dropped).
  void set_udp_handler(std::function<void(const UdpDatagram&)> h);
  // inject writes one IP packet (wire form, checksums complete) into the TUN, as if the
  // network delivered it to the host. Any thread. Errors: message_size (over 64 KiB), the
  // write's errno (EAGAIN: the TUN's queue is full; the packet is lost, like a drop).
  [[nodiscard]] Status inject(std::span<const std::byte> ip_packet);

  // tun_fd / poll_tun (StackOptions::reader_thread false): the TUN's fd (non-blocking; poll it
  // for readability) and one round of what the reader thread does - read what is there (a few
  // batches at most), feed it to lwIP, hand out accepted connections. Returns the packets read,
  // 0 when none, -1 once the device is gone (device_gone()). One thread at a time.
  [[nodiscard]] int tun_fd() const;
  int poll_tun();
  // accept waits up to |timeout| for a queued connection. Errors: ETIMEDOUT.
  [[nodiscard]] Result<ConnectionPtr> accept(std::chrono::milliseconds timeout);

  // freeze holds |tuple|'s inbound packets (tuple as the Connection sees it), and what lwIP
  // emits for it, until thaw().
  void freeze(const FourTuple& tuple);
  // thaw ends the freeze: sends what lwIP emitted meanwhile, then replays the held inbound
  // packets into lwIP, oldest first; returns how many were replayed.
  std::size_t thaw(const FourTuple& tuple);
  // thaw, replaying |first| (the flow's inbound packets held elsewhere, e.g. by the source of a
  // migration: IP packets, wire form; their TCP checksums are recomputed, since a tc hook may
  // have recorded them with a partial one) before this stack's own held ones.
  std::size_t thaw(const FourTuple& tuple, std::vector<std::vector<std::byte>> first);
  // take_held ends the freeze and returns the held inbound packets (IP packets, wire form)
  // instead of replaying them, for a flow that moves elsewhere; held outbound ones are
  // discarded (the snapshot carries their bytes).
  [[nodiscard]] std::vector<std::vector<std::byte>> take_held(const FourTuple& tuple);
  // held_latest_ack: the latest ACK (wire sequence numbers) among the inbound packets held for
  // the frozen |tuple|, with its window; nullopt when none (or not frozen). The held packets
  // stay. A migration target uses it as the native target uses its freeze's peer_ack: the peer
  // may have answered the source's question (ask_peer_ack) after the flow was steered here.
  [[nodiscard]] std::optional<AckSeen> held_latest_ack(const FourTuple& tuple);

  // snapshot captures |conn| into a TcpSnapshot in wire sequence numbers (the same value
  // repair/ produces for a kernel socket) and then removes its PCB silently (no FIN, no RST):
  // |conn| is dead afterwards (alive() == false). Freeze the flow first, or packets arriving
  // between snapshot and restore are answered with RST by lwIP. Errors: ENOTCONN (no PCB),
  // ENOTSUP (state not supported, named).
  [[nodiscard]] Result<TcpSnapshot> snapshot(Connection& conn);
  // restore rebuilds a connection from |snap| (lwIP-made or kernel-made) in this stack: the
  // whole send queue is queued again and its sent part re-sent at once (the peer sees harmless
  // duplicates); unread receive bytes are readable from the new Connection. Errors: EINVAL
  // (invalid snapshot), ENOTSUP (state not supported), EADDRINUSE (the tuple still has a PCB
  // here). SACK and timestamps, which lwIP lacks, are not carried: the connection continues
  // without them (Linux peers accept that, see docs/userstack.md).
  [[nodiscard]] Result<ConnectionPtr> restore(const TcpSnapshot& snap);

  [[nodiscard]] StackCounters counters() const;
  [[nodiscard]] const TunDevice& tun() const;
  // device_gone: the TUN device was deleted (or its network namespace was) and the reader
  // thread stopped: nothing reaches or leaves the connections any more.
  [[nodiscard]] bool device_gone() const;

 private:
  explicit Stack(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rendr::userstack
