// SPDX-License-Identifier: Apache-2.0
// ssh through rendr-tun: a stock OpenSSH client in the lab's "app" netns runs a command on a
// stock sshd at the origin address (198.18.0.10:22 in "egress") that streams a file back; the
// active engine path is dropped mid-transfer, and the session must neither notice nor lose a
// byte (the tun lab: tun_lab.hpp).
#include "tun_lab.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

using namespace rendr::test;

TEST_CASE("tun: an ssh session streaming 32 MiB survives its active engine path dropped",
          "[.netns][tun][netns]") {
  if (::access("/usr/sbin/sshd", X_OK) != 0 || ::access("/usr/bin/ssh", X_OK) != 0) {
    FAIL("OpenSSH is not installed (tools/setup installs openssh-server and openssh-client)");
  }
  TunLab lab(32U << 20);
  const std::string d = lab.dir.path;
  // A throw-away host key and client key; sshd with its own config (no PAM, keys only),
  // listening only on the origin address inside the lab.
  lab.egress.must("mkdir -p /run/sshd && chmod 0755 /run/sshd && "
                  "ssh-keygen -q -t ed25519 -N '' -f " + d + "/hostkey && "
                  "ssh-keygen -q -t ed25519 -N '' -f " + d + "/id && "
                  "cp " + d + "/id.pub " + d + "/authorized_keys");
  {
    std::ofstream c(d + "/sshd_config");
    c << "ListenAddress 198.18.0.10:22\nHostKey " << d << "/hostkey\n"
      << "AuthorizedKeysFile " << d << "/authorized_keys\nPidFile " << d << "/sshd.pid\n"
      << "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
      << "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n";
    REQUIRE(c.good());
  }
  Child sshd;
  sshd.pid = lab.start(lab.egress, "sshd",
                       {"/bin/sh", "-c", "exec /usr/sbin/sshd -D -e -f " + d + "/sshd_config 2>&1"},
                       "Server listening");
  const int body = open_fifo(d + "/body");
  lab.fifos.push_back(body);
  Child ssh;
  ssh.pid = lab.app.spawn({"ssh", "-F", "/dev/null", "-i", d + "/id", "-o", "BatchMode=yes",
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
                           "root@198.18.0.10", "cat " + d + "/blob"},
                          d + "/body");
  int dropped = 0;
  const std::vector<char> got = read_dropping_path(lab, body, 4U << 20, dropped);
  CHECK(dropped > 0);
  check_drop_counted(lab, dropped);
  CHECK(wait_exit(ssh.pid, 60000) == 0);
  ssh.pid = -1;
  REQUIRE(got.size() == lab.blob.size());
  CHECK(std::equal(got.begin(), got.end(), reinterpret_cast<const char*>(lab.blob.data())));
}
