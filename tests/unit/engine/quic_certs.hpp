// SPDX-License-Identifier: Apache-2.0
// QuicCerts: two private CAs as `rendrctl cert` makes them (tools/rendrctl/cert.cpp, compiled
// into the test), each with a "server" and a "client" certificate, in a temporary directory
// removed afterwards. The quic tests use CA "a" unless they test a refusal.
#pragma once

#include "rendrctl/cert.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace rendr::test {

struct QuicCerts {
  QuicCerts() {
    char tmpl[] = "/tmp/rendr-quic-certs-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    root = tmpl;
    for (const char* ca : {"a", "b"}) {
      cert::InitOptions init;
      init.dir = root + "/" + ca;
      init.ca_name = std::string("test CA ") + ca;
      REQUIRE(cert::init_ca(init).ok());
      for (const char* name : {"server", "client"}) {
        cert::IssueOptions is;
        is.dir = init.dir;
        is.name = name;
        REQUIRE(cert::issue(is).ok());
      }
    }
  }
  ~QuicCerts() {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  QuicCerts(const QuicCerts&) = delete;
  QuicCerts& operator=(const QuicCerts&) = delete;
  [[nodiscard]] std::string ca(const std::string& which = "a") const {
    return root + "/" + which + "/ca.pem";
  }
  [[nodiscard]] std::string cert(const std::string& name, const std::string& which = "a") const {
    return root + "/" + which + "/" + name + ".pem";
  }
  [[nodiscard]] std::string key(const std::string& name, const std::string& which = "a") const {
    return root + "/" + which + "/" + name + ".key";
  }
  std::string root;
};

}  // namespace rendr::test
