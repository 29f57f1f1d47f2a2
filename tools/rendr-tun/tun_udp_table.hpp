// SPDX-License-Identifier: Apache-2.0
// UdpTable: the ingress's UDP flows (docs/tun-ingress.md "UDP"), one entry per 5-tuple (app
// address:port -> destination address:port), bounded and reaped when idle. I/O-free: the
// caller passes "now" (tests use fake times) and owns the locking. A datagram either finds its
// flow, creates one, or is refused because the table is full (the caller counts and drops it).
#pragma once

#include <rendr/common/endpoint.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rendr::tun {

struct UdpKey {
  Endpoint app;  // the app's address and port
  Endpoint dst;  // where it sent the datagram
  friend bool operator==(const UdpKey&, const UdpKey&) = default;
};

struct UdpKeyHash {
  std::size_t operator()(const UdpKey& k) const {
    std::size_t h = 1469598103934665603ULL;
    const auto mix = [&h](const Endpoint& e) {
      for (auto b : e.addr) {
        h = (h ^ b) * 1099511628211ULL;
      }
      h = (h ^ e.port) * 1099511628211ULL;
      h = (h ^ static_cast<std::size_t>(e.family)) * 1099511628211ULL;
    };
    mix(k.app);
    mix(k.dst);
    return h;
  }
};

template <typename V>
class UdpTable {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  UdpTable(std::size_t max_flows, std::chrono::milliseconds idle)
      : max_flows_(max_flows), idle_(idle) {}

  enum class Outcome { found, created, full };
  struct Lookup {
    V* value = nullptr;  // null when full
    Outcome outcome = Outcome::full;
  };

  // lookup finds |k|'s flow and marks it active at |now|; without one it creates one with
  // |make| unless the table holds max_flows already.
  Lookup lookup(const UdpKey& k, TimePoint now, const std::function<V()>& make) {
    if (auto it = flows_.find(k); it != flows_.end()) {
      it->second.last = now;
      return {&it->second.value, Outcome::found};
    }
    if (flows_.size() >= max_flows_) {
      return {nullptr, Outcome::full};
    }
    auto [it, ok] = flows_.emplace(k, Entry{make(), now});
    return {&it->second.value, Outcome::created};
  }

  // touch marks |k|'s flow active at |now| (a reply went to the app); false: no such flow.
  bool touch(const UdpKey& k, TimePoint now) {
    auto it = flows_.find(k);
    if (it == flows_.end()) {
      return false;
    }
    it->second.last = now;
    return true;
  }

  // expire removes every flow idle for the idle timeout or longer at |now| and returns them.
  std::vector<std::pair<UdpKey, V>> expire(TimePoint now) {
    std::vector<std::pair<UdpKey, V>> out;
    for (auto it = flows_.begin(); it != flows_.end();) {
      if (now - it->second.last >= idle_) {
        out.emplace_back(it->first, std::move(it->second.value));
        it = flows_.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }

  // find: |k|'s flow, or null; does not mark it active.
  V* find(const UdpKey& k) {
    auto it = flows_.find(k);
    return it == flows_.end() ? nullptr : &it->second.value;
  }

  // erase removes |k|'s flow (it ended early); true when it was there.
  bool erase(const UdpKey& k) { return flows_.erase(k) != 0; }

  [[nodiscard]] std::size_t size() const { return flows_.size(); }
  [[nodiscard]] std::size_t max_flows() const { return max_flows_; }
  [[nodiscard]] std::chrono::milliseconds idle_timeout() const { return idle_; }

 private:
  struct Entry {
    V value;
    TimePoint last;
  };
  std::size_t max_flows_;
  std::chrono::milliseconds idle_;
  std::unordered_map<UdpKey, Entry, UdpKeyHash> flows_;
};

}  // namespace rendr::tun
