// SPDX-License-Identifier: Apache-2.0
// UniqueFd's Unix socket helpers: listen_unix and connect_unix meet in a private temp dir.
#include <rendr/common/unique_fd.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

using namespace rendr;

namespace {

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/rendr-ufd-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    REQUIRE(d != nullptr);
    path = d;
  }
  ~TempDir() {
    ::unlink((path + "/s").c_str());
    ::rmdir(path.c_str());
  }
  std::string path;
};

}  // namespace

TEST_CASE("listen_unix binds over a stale file and connect_unix reaches it", "[common][fd]") {
  TempDir dir;
  const std::string path = dir.path + "/s";
  {
    // A stale file where the socket goes (a crashed server's socket, or anything): replaced.
    auto f = UniqueFd::open(path, O_CREAT | O_WRONLY, 0600);
    REQUIRE(f.ok());
  }
  for (int type : {SOCK_STREAM, SOCK_SEQPACKET}) {
    auto l = UniqueFd::listen_unix(path, type, 4);
    REQUIRE(l.ok());
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    auto c = UniqueFd::connect_unix(path, type);
    REQUIRE(c.ok());
    UniqueFd a(::accept4(l->get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(a.valid());
    CHECK(::send(c->get(), "x", 1, 0) == 1);
    char b = 0;
    CHECK(::recv(a.get(), &b, 1, 0) == 1);
    CHECK(b == 'x');
  }
}

TEST_CASE("listen_unix and connect_unix refuse a path that does not fit, and say which",
          "[common][fd]") {
  const std::string longp = "/tmp/" + std::string(200, 'p');
  auto l = UniqueFd::listen_unix(longp, SOCK_STREAM, 1);
  REQUIRE_FALSE(l.ok());
  CHECK(l.error().code == std::errc::filename_too_long);
  CHECK(l.error().message().find(longp) != std::string::npos);
  auto c = UniqueFd::connect_unix(longp, SOCK_STREAM);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == std::errc::filename_too_long);
}

TEST_CASE("connect_unix to a path nobody listens on fails with the errno", "[common][fd]") {
  TempDir dir;
  auto c = UniqueFd::connect_unix(dir.path + "/s", SOCK_STREAM);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == std::errc::no_such_file_or_directory);
  auto l = UniqueFd::listen_unix(dir.path + "/s", SOCK_STREAM, 1);
  REQUIRE(l.ok());
  l->reset();  // closed: the file stays, nothing listens
  auto c2 = UniqueFd::connect_unix(dir.path + "/s", SOCK_STREAM);
  REQUIRE_FALSE(c2.ok());
  CHECK(c2.error().code == std::errc::connection_refused);
}
