// SPDX-License-Identifier: Apache-2.0
// The gateway lab as named network namespaces, for tools (the demo now; rendr-lab later):
// <prefix>-peer -- <prefix>-gw -- {<prefix>-a, <prefix>-b}. The VIP (10.99.0.1 / fd99::1) is on
// both hosts; gw routes it to the owner. Everything lives in namespaces this object creates;
// the destructor (and teardown()) deletes them, and create() first removes leftovers of an
// earlier run with the same prefix. Not thread-safe.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <memory>
#include <string>

namespace rendr::lab {

enum class Host { a, b };

class GatewayLab {
 public:
  static constexpr const char* kVip4 = "10.99.0.1";
  static constexpr const char* kVip6 = "fd99::1";
  static constexpr const char* kPeer4 = "10.0.1.2";

  [[nodiscard]] static Result<std::unique_ptr<GatewayLab>> create(std::string prefix);
  ~GatewayLab();
  GatewayLab(const GatewayLab&) = delete;
  GatewayLab& operator=(const GatewayLab&) = delete;

  [[nodiscard]] std::string ns(const std::string& role) const { return prefix_ + "-" + role; }
  [[nodiscard]] std::string host_ns(Host h) const { return ns(h == Host::a ? "a" : "b"); }
  // netns_fd opens the namespace (for setns / NetnsEnter).
  [[nodiscard]] Result<UniqueFd> netns_fd(const std::string& role) const;

  // run executes "ip netns exec <ns> sh -c <cmd>"; error includes the output.
  [[nodiscard]] Status run(const std::string& role, const std::string& cmd) const;

  [[nodiscard]] Status route_vip_to(Host h);
  [[nodiscard]] Status freeze(const FourTuple& t);
  [[nodiscard]] Status unfreeze();
  void teardown();

 private:
  explicit GatewayLab(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string prefix_;
  bool frozen_ = false;
  bool up_ = false;
};

// NetnsEnter moves the calling thread into a namespace and back (RAII).
class NetnsEnter {
 public:
  [[nodiscard]] static Result<NetnsEnter> enter(int netns_fd);
  NetnsEnter(NetnsEnter&&) noexcept = default;
  NetnsEnter& operator=(NetnsEnter&&) noexcept = default;
  ~NetnsEnter();

 private:
  explicit NetnsEnter(UniqueFd prev) : prev_(std::move(prev)) {}
  UniqueFd prev_;
};

// shell runs "sh -c cmd" and returns its exit status; output goes to |out| if given.
int shell(const std::string& cmd, std::string* out = nullptr);

}  // namespace rendr::lab
