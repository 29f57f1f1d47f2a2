// SPDX-License-Identifier: Apache-2.0
// The one place lwIP's headers are included (STYLE M5). Debian's lwipopts.h declares
// sys_lock_tcpip_core() and friends without extern "C", so everything is wrapped here.
#pragma once

extern "C" {
#include <lwip/opt.h>
#include <lwip/init.h>
#include <lwip/ip.h>
#include <lwip/ip_addr.h>
#include <lwip/netif.h>
#include <lwip/pbuf.h>
#include <lwip/tcp.h>
#include <lwip/tcpip.h>
#include <lwip/priv/tcp_priv.h>
}

namespace rendr::userstack {

// CoreLock — LOCK_TCPIP_CORE for a scope. Not recursive: never take it while holding it.
class CoreLock {
 public:
  CoreLock() { LOCK_TCPIP_CORE(); }
  ~CoreLock() { UNLOCK_TCPIP_CORE(); }
  CoreLock(const CoreLock&) = delete;
  CoreLock& operator=(const CoreLock&) = delete;
};

}  // namespace rendr::userstack
