// SPDX-License-Identifier: Apache-2.0
// Private: Stack::Impl and Connection::Impl, shared by stack.cpp, connection.cpp and
// snapshot.cpp. All members marked (core) are guarded by lwIP's core lock.
#pragma once

#include "lwip.hpp"

#include <rendr/userstack/flow_table.hpp>
#include <rendr/userstack/stack.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace rendr::userstack {

// endpoint_of converts an lwIP address + port.
Endpoint endpoint_of(const ip_addr_t& a, std::uint16_t port);
// ip_addr_of converts back.
ip_addr_t ip_addr_of(const Endpoint& e);
// tuple_of reads a PCB's tuple (local = our side).
FourTuple tuple_of(const tcp_pcb* pcb);

class Connection::Impl {
 public:
  Impl(Stack::Impl& stack, tcp_pcb* pcb, FourTuple tuple);
  ~Impl();

  // attach installs the callbacks on |pcb| (core).
  void attach(tcp_pcb* pcb);
  // detach clears them and forgets the PCB without freeing it (core).
  tcp_pcb* detach();
  void signal();
  // queued receive bytes (core)
  [[nodiscard]] std::size_t rx_size() const { return rx_.size() - rx_head_; }

  Stack::Impl& stack_;
  tcp_pcb* pcb_ = nullptr;  // (core)
  FourTuple tuple_;
  // The event fd, made on first use (event_fd/clear_event), or the waker instead (set_waker);
  // |pending_|: an event came while there was neither. Guarded by efd_mu_ (a leaf lock: signal()
  // runs under the core lock, event_fd() without it).
  mutable std::mutex efd_mu_;
  mutable UniqueFd efd_;
  mutable bool pending_ = false;
  std::function<void()> waker_;
  // ensure_efd_locked makes the event fd if there is none (readable at once if |pending_|).
  void ensure_efd_locked() const;
  std::vector<std::byte> rx_;  // (core) received bytes; rx_head_ = first unread
  std::size_t rx_head_ = 0;
  bool peer_fin_ = false;     // (core)
  bool reset_ = false;        // (core)
  bool shut_wr_ = false;      // (core)
  bool snapshotted_ = false;  // (core)
  // Bytes accepted for sending that lwIP's send buffer could not take yet (a restored send
  // queue larger than TCP_SND_BUF); pushed as ACKs free space, then our FIN if |fin_pending_|.
  std::vector<std::byte> tx_pending_;  // (core)
  std::size_t tx_pending_head_ = 0;    // (core)
  bool fin_pending_ = false;           // (core)

  // push_pending moves tx_pending_ into lwIP as far as it fits (core).
  void push_pending();
  [[nodiscard]] std::size_t tx_pending_size() const {
    return tx_pending_.size() - tx_pending_head_;
  }

  static err_t on_recv(void* arg, tcp_pcb* pcb, pbuf* p, err_t err);
  static err_t on_sent(void* arg, tcp_pcb* pcb, u16_t len);
  static void on_err(void* arg, err_t err);
};

class Stack::Impl {
 public:
  explicit Impl(const StackOptions& opts, TunDevice tun);
  ~Impl();

  Status init();  // netif setup (takes the core lock)
  void run();     // reader thread
  // read_batch reads up to kBatch packets from the TUN (non-blocking) and feeds them: the
  // count, 0 when there was none, -1 when the device is gone (|error_seen|: poll said so).
  int read_batch(bool error_seen);
  static constexpr std::size_t kBatch = 32;
  void stop();
  // prune_flows drops shim entries whose connection lwIP no longer has (takes the core lock).
  void prune_flows();
  static constexpr std::chrono::seconds kPruneInterval{5};

  // feed passes one inbound packet (wire form, checksum complete) through the shim into lwIP
  // (core).
  void feed(std::span<std::byte> pkt, bool replay);
  void count_ignored(std::span<const std::byte> pkt);  // ICMP, fragments, UDP among the ignored
  // output writes one lwIP packet to the TUN through the shim (core).
  err_t output(pbuf* p);
  // write_tun writes one wire-form IP packet (core).
  void write_tun(std::span<const std::byte> pkt);
  void ensure_listener(std::uint16_t port);     // (core)
  ConnectionPtr make_connection(tcp_pcb* pcb);  // (core)
  void deliver_accepts();                       // outside the core lock

  static err_t on_accept(void* arg, tcp_pcb* newpcb, err_t err);

  StackOptions opts_;
  TunDevice tun_;
  netif nif_{};
  FlowTable flows_;                                        // (core)
  std::unordered_map<std::uint16_t, tcp_pcb*> listeners_;  // (core)
  std::vector<ConnectionPtr> new_conns_;  // (core) accepted during the current batch
  std::vector<std::byte> out_buf_;        // (core)

  std::mutex udp_mu_;
  std::function<void(const UdpDatagram&)> udp_handler_;  // (udp_mu_)
  // hand_udp passes |pkt| to the UDP handler when it is UDP and a handler is set (reader
  // thread, outside the core lock); false: not handed.
  bool hand_udp(std::span<const std::byte> pkt, const std::function<void(const UdpDatagram&)>& h);

  std::mutex accept_mu_;
  std::function<void(ConnectionPtr)> accept_handler_;
  std::deque<ConnectionPtr> accept_q_;
  UniqueFd accept_efd_;

  UniqueFd stop_efd_;
  std::thread reader_;
  std::vector<std::vector<std::byte>> bufs_;  // read_batch's buffers (one reader at a time)
  std::chrono::steady_clock::time_point next_prune_{};  // poll_tun's prune schedule
  // The TUN device went away under the reader (deleted, or its namespace was): it stopped.
  std::atomic<bool> device_gone_{false};
  bool netif_added_ = false;

  struct Counters {
    std::atomic<std::uint64_t> rx_packets{0}, rx_ignored{0}, rx_bad_checksum{0}, rx_held{0},
        rx_hold_dropped{0}, rx_replayed{0}, tx_packets{0}, tx_frozen_dropped{0}, tx_held{0},
        tx_discarded{0}, tx_errors{0}, accepted{0}, listeners{0}, rx_icmp{0}, rx_fragments{0},
        rx_udp{0}, tx_injected{0};
  } c_;
};

}  // namespace rendr::userstack
