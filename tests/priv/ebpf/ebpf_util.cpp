// SPDX-License-Identifier: Apache-2.0
#include "ebpf_util.hpp"

#include <net/if.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace rendr::test {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

}  // namespace

int ifindex_of(const std::string& name) {
  unsigned idx = ::if_nametoindex(name.c_str());
  if (idx == 0) {
    fail("if_nametoindex " + name);
  }
  return static_cast<int>(idx);
}

}  // namespace rendr::test
