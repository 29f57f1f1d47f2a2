// SPDX-License-Identifier: Apache-2.0
// FakeSys — a scripted, recording rendr::repair::Sys for hermetic unit tests of repair/. It models
// just enough of a kernel TCP socket in repair mode (queues and their sequence numbers, selected
// queue, TCP_INFO, TCP_REPAIR_WINDOW, options, addresses, a FIN forged through a raw socket) for
// checkpoint() and restore() to run end to end, records every call in order, and fails the calls
// a test scripts with the errno it chooses.
//
// Descriptors are real: every "socket" is the write end of a pipe whose read end the fake keeps,
// so UniqueFd/dup/close in repair/ work unchanged, a dup'd fd maps to the same modelled socket
// (looked up by inode), and closed() can tell whether repair/ closed a socket (POLLHUP on the
// read end). No network, no privileges. Single-threaded.
#pragma once

#include <rendr/common/log.hpp>
#include <rendr/repair/sys.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rendr::repair::test {

enum class Op {
  socket, close, setsockopt, getsockopt, ioctl, recv, send, sendto, bind, connect, shutdown,
  getsockname, getpeername, get_fl, set_fl
};
[[nodiscard]] const char* to_string(Op op);

struct Call {
  Op op = Op::socket;
  int fd = -1;
  int level = 0;  // setsockopt/getsockopt level; socket: domain
  int name = 0;   // option name; socket: type; ioctl: request; recv/send: flags; shutdown: how
  int value = 0;  // int setsockopt value (when len == sizeof(int)); else 0
  std::size_t len = 0;
  int result = 0;
  int err = 0;  // errno when result < 0
  [[nodiscard]] bool is_set(int lvl, int nm) const {
    return op == Op::setsockopt && level == lvl && name == nm;
  }
  [[nodiscard]] bool is_get(int lvl, int nm) const {
    return op == Op::getsockopt && level == lvl && name == nm;
  }
  [[nodiscard]] std::string describe() const;
};

// Modelled kernel socket state; tests set it up for checkpoint and inspect it after restore.
struct FakeSocket {
  int domain = AF_INET;
  int type = SOCK_STREAM;
  int protocol = IPPROTO_TCP;
  bool raw = false;
  std::uint8_t state = TCP_ESTABLISHED;
  std::uint8_t tcpi_options = 0;
  std::uint8_t snd_wscale = 0;
  std::uint8_t rcv_wscale = 0;
  bool repair = false;
  int queue = TCP_NO_QUEUE;
  std::uint32_t recv_seq = 0;  // first byte of recv_queue
  std::uint32_t send_seq = 0;  // first byte of send_queue
  std::vector<std::byte> recv_queue;
  std::vector<std::byte> send_queue;  // unacked then unsent
  std::uint32_t unsent = 0;
  bool peer_fin = false;   // counts in rcv_nxt
  bool our_fin = false;    // counts in write_seq
  bool our_fin_acked = false;
  std::uint32_t mss = 1460;
  std::uint32_t timestamp = 0;
  bool window_supported = true;  // false: TCP_REPAIR_WINDOW -> ENOPROTOOPT
  tcp_repair_window window{};
  std::string congestion = "cubic";
  linger lingering{};
  int fl = O_RDWR;
  std::map<std::pair<int, int>, int> opts;  // every other int option, default 0
  sockaddr_storage local{};
  socklen_t local_len = 0;
  sockaddr_storage remote{};
  socklen_t remote_len = 0;
  bool connected = false;
  std::size_t live_sends = 0;  // bytes sent outside repair mode
  bool kernel_grows_recv_queue = false;  // every SIOCINQ sees one more byte (traffic not frozen)
};

class FakeSys final : public Sys {
 public:
  FakeSys() = default;
  ~FakeSys() override;
  FakeSys(const FakeSys&) = delete;
  FakeSys& operator=(const FakeSys&) = delete;

  // add_connected returns the fd of a connected TCP socket between |local| and |remote|
  // ("10.0.0.1:80", "[fd00::1]:80") whose model the test can then adjust through sock(fd).
  int add_connected(const std::string& local, const std::string& remote);
  // sock returns the model behind |fd| (or behind the fd it was dup'd from).
  FakeSocket& sock(int fd);
  // created returns the fds of add_connected() and socket(), in order (may since be closed).
  [[nodiscard]] const std::vector<int>& created() const { return created_; }
  // created_sock returns the model behind created()[index], even after it was closed.
  FakeSocket& created_sock(std::size_t index);
  // closed tells whether every descriptor of created()[index] was closed.
  [[nodiscard]] bool closed(std::size_t index) const;
  // is_open tells whether |fd| is still an open descriptor of a modelled socket.
  [[nodiscard]] bool is_open(int fd) const;

  // Fault scripting. fail_nth fails the |n|-th call (0-based, over all ops) once with |err|;
  // fail_if fails every call matching |pred| (at most |times| times; -1 = always).
  void fail_nth(std::size_t n, int err);
  void fail_if(std::function<bool(const Call&)> pred, int err, int times = -1);
  void clear_faults();

  [[nodiscard]] const std::vector<Call>& calls() const { return calls_; }
  // Every packet a raw socket sent (sendto that succeeded), in order.
  std::vector<std::vector<std::byte>> raw_sent;
  void clear_calls() { calls_.clear(); }

  // The netns: SO_NETNS_COOKIE reports |netns_cookie| (0 = a kernel without the option), and
  // every socket() starts with |socket_defaults| as its int options (the netns' sysctls) and
  // |default_congestion|.
  std::uint64_t netns_cookie = 0;
  std::map<std::pair<int, int>, int> socket_defaults;
  std::string default_congestion = "cubic";
  // What uname() reports as the kernel release (not recorded as a call).
  std::string kernel_release = "6.1.0";

  // Sys
  int socket(int domain, int type, int protocol) override;
  int close(int fd) override;
  int setsockopt(int fd, int level, int name, const void* val, socklen_t len) override;
  int getsockopt(int fd, int level, int name, void* val, socklen_t* len) override;
  int ioctl_int(int fd, unsigned long request, int* out) override;
  ssize_t recv(int fd, void* buf, std::size_t len, int flags) override;
  ssize_t send(int fd, const void* buf, std::size_t len, int flags) override;
  ssize_t sendto(int fd, const void* buf, std::size_t len, int flags, const sockaddr* to,
                 socklen_t tolen) override;
  int bind(int fd, const sockaddr* addr, socklen_t len) override;
  int connect(int fd, const sockaddr* addr, socklen_t len) override;
  int shutdown(int fd, int how) override;
  int getsockname(int fd, sockaddr* addr, socklen_t* len) override;
  int getpeername(int fd, sockaddr* addr, socklen_t* len) override;
  int get_fl(int fd) override;
  int set_fl(int fd, int flags) override;
  int uname(struct utsname* out) override;

 private:
  struct Fault {
    std::function<bool(const Call&)> pred;
    int err = 0;
    int times = -1;
  };
  struct Entry {
    int read_end = -1;
    std::unique_ptr<FakeSocket> sock;
  };
  int new_socket(FakeSocket model);
  FakeSocket* find(int fd);
  // begin records |c|; returns the errno to fail with (0 = proceed).
  int begin(Call c);
  int finish(int result, int err);
  FakeSocket* tcp_target();  // the socket a forged segment is delivered to

  std::map<unsigned long, Entry> by_inode_;
  std::vector<int> created_;
  std::vector<int> created_read_ends_;
  std::vector<unsigned long> created_inodes_;
  std::vector<Fault> faults_;
  std::map<std::size_t, int> nth_;
  std::vector<Call> calls_;
};

// ---- helpers the repair unit tests share --------------------------------------------------

inline LogSink quiet() {
  return [](LogLevel, std::string_view) {};
}

inline bool is_repair_on(const Call& c) {
  return c.is_set(IPPROTO_TCP, TCP_REPAIR) && c.value == TCP_REPAIR_ON;
}
inline bool is_repair_off(const Call& c) {
  return c.is_set(IPPROTO_TCP, TCP_REPAIR) && c.value != TCP_REPAIR_ON;
}

inline std::size_t count_if(const std::vector<Call>& calls, bool (*pred)(const Call&)) {
  std::size_t n = 0;
  for (const auto& c : calls) {
    n += pred(c) ? 1 : 0;
  }
  return n;
}

inline std::string trace(const std::vector<Call>& calls) {
  std::string s;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    s += "  #" + std::to_string(i) + " " + calls[i].describe() + "\n";
  }
  return s;
}

inline std::vector<std::byte> bytes(std::size_t n, unsigned salt) {
  std::vector<std::byte> b(n);
  for (std::size_t i = 0; i < n; ++i) {
    b[i] = static_cast<std::byte>((i * 29U + salt) & 0xFFU);
  }
  return b;
}

// source sets up an established socket with data in every queue and all TCP options.
inline int source(FakeSys& fake, bool v6 = false) {
  int fd = fake.add_connected(v6 ? "[fd99::1]:443" : "10.99.0.1:443",
                              v6 ? "[fd00:1::2]:51000" : "10.0.1.2:51000");
  auto& s = fake.sock(fd);
  s.tcpi_options = TCPI_OPT_SACK | TCPI_OPT_TIMESTAMPS | TCPI_OPT_WSCALE;
  s.snd_wscale = 7;
  s.rcv_wscale = 9;
  s.recv_seq = 5000;
  s.recv_queue = bytes(700, 1);
  s.send_seq = 0xFFFFFF00U;
  s.send_queue = bytes(1200, 2);
  s.unsent = 200;
  s.timestamp = 424242;
  s.opts[{IPPROTO_TCP, TCP_NODELAY}] = 1;
  return fd;
}

}  // namespace rendr::repair::test
