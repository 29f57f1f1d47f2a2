// SPDX-License-Identifier: Apache-2.0
// listen_udpflow: one socket for every path of every flow; datagrams are routed by their
// udpflow id, and a datagram with an unknown id is a fresh carrier's first frame.
#include "listener_core.hpp"

namespace rendr {

namespace detail {

void ListenerCore::do_recv() {
  usock->async_wait(asio::socket_base::wait_read, [self = shared_from_this()](
                                                       std::error_code ec) {
    if (ec) {
      return;  // socket closed
    }
    self->drain_udp();
    if (self->usock->is_open()) {
      self->do_recv();
    }
  });
}

void ListenerCore::drain_udp() {
  for (int i = 0; i < 64; ++i) {
    asio::ip::udp::endpoint src;
    socklen_t slen = static_cast<socklen_t>(src.capacity());
    const ssize_t n = ::recvfrom(usock->native_handle(), ubuf.data(), ubuf.size(), MSG_DONTWAIT,
                                 static_cast<sockaddr*>(src.data()), &slen);
    if (n < 0) {
      return;
    }
    src.resize(slen);
    const auto len = static_cast<std::size_t>(n);
    if (len < kUdpFlowHeader + engine::kHeaderSize || ubuf[0] != std::byte{0}) {
      continue;
    }
    UdpFlowId id{};
    std::memcpy(id.data(), ubuf.data() + 1, id.size());
    const std::span<const std::byte> frame(ubuf.data() + kUdpFlowHeader, len - kUdpFlowHeader);
    if (auto it = upaths.find(id); it != upaths.end()) {
      auto st = it->second;
      if (!st->closed) {
        if (st->remote != src) {
          st->remote = src;  // NAT rebinding: replies follow the new source
        }
        if (st->on_packet) {
          st->on_packet(frame);
        }
        continue;
      }
      upaths.erase(it);
    }
    const engine::PathOptions popts{engine::Framing::datagram, "udpflow", kUdpFlowMaxFrame};
    // Every datagram is checked: the dialer seals each repeat of HELLO / BRIDGE_TAG afresh.
    bool key_checked = false;
    auto out = accept_first(frame, popts, false, key_of(src.address()), key_checked,
                            [&](FlowDriver& d, PathId path) {
      auto st = std::make_shared<UdpServerPathState>();
      st->id = id;
      st->remote = src;
      upaths[id] = st;
      d.attach_packet_locked(path, make_udpflow_server_path(usock, st, local), "udpflow");
    });
    if (!out.reply.empty()) {
      std::vector<std::byte> dg(kUdpFlowHeader + out.reply.size());
      dg[0] = std::byte{0};
      std::memcpy(dg.data() + 1, id.data(), id.size());
      std::memcpy(dg.data() + kUdpFlowHeader, out.reply.data(), out.reply.size());
      (void)::sendto(usock->native_handle(), dg.data(), dg.size(), MSG_DONTWAIT,
                     static_cast<const sockaddr*>(src.data()), src.size());
    }
    // retry: dropped; the dialer repeats BRIDGE_TAG on datagram carriers.
  }
  // Forget closed paths now and then (bounded work per wake-up).
  for (auto it = upaths.begin(); it != upaths.end();) {
    it = it->second->closed ? upaths.erase(it) : std::next(it);
  }
}

}  // namespace detail

using detail::ListenerCore;
using detail::check_limits;
using detail::runtime_for;

Result<ListenerPtr> listen_udpflow(std::string_view address, ListenOptions opts) {
  auto ep = detail::parse_udp_endpoint(std::string(address));
  if (!ep) {
    return std::move(ep).take_error().with_context("listen_udpflow");
  }
  if (auto st = check_limits(opts); !st) {
    return std::move(st).take_error().with_context("listen_udpflow");
  }
  auto table = engine::BridgeTable::create(detail::bridge_config(opts, true));
  if (!table) {
    return std::move(table).take_error().with_context("listen_udpflow");
  }
  auto rt = runtime_for(opts.io);
  auto core = std::make_shared<ListenerCore>(rt, opts, std::move(*table), true);
  auto sock = std::make_shared<asio::ip::udp::socket>(rt->io());
  std::error_code ec;
  sock->open(ep->protocol(), ec);
  if (!ec) {
    sock->bind(*ep, ec);
  }
  if (ec) {
    return Error{ec, "listen_udpflow " + std::string(address)};
  }
  // Large socket buffers: every path of every flow shares this socket.
  sock->set_option(asio::socket_base::receive_buffer_size(8 << 20), ec);
  sock->set_option(asio::socket_base::send_buffer_size(8 << 20), ec);
  const auto le = sock->local_endpoint(ec);
  core->local = detail::endpoint_string(le.address(), le.port());
  core->usock = std::move(sock);
  core->ubuf.resize(64 * 1024);
  asio::post(rt->io(), [core] { core->do_recv(); });
  return std::make_unique<Listener>(core);
}

}  // namespace rendr
