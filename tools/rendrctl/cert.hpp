// SPDX-License-Identifier: Apache-2.0
// rendrctl cert — a small private CA for the agent channel (TLS 1.3, mutual authentication).
// `cert init` creates the CA (ca.pem + ca.key) once; `cert issue` signs one agent's certificate
// (<name>.pem + <name>.key): EC P-256 keys, SHA-256 signatures, CN = subjectAltName DNS = the
// agent's name, extendedKeyUsage serverAuth + clientAuth (each agent is both). Key files are
// written with mode 0600, certificates 0644, each through a temporary file and rename, so a
// crash never leaves a half-written file. Nothing is overwritten without --force. Uses OpenSSL 3
// libcrypto only. See docs/certificates.md. Not thread-safe (OpenSSL error queue per thread).
#pragma once

#include <rendr/common/result.hpp>

#include <string>

namespace rendr::cert {

struct InitOptions {
  std::string dir;  // created (0700) if missing
  std::string ca_name = "rendr agent CA";  // CA subject CN
  int days = 3650;
  bool force = false;  // replace an existing CA (invalidates every issued certificate)
};

struct IssueOptions {
  std::string dir;  // holds ca.pem + ca.key; receives <name>.pem + <name>.key
  std::string name;  // agent name: CN and DNS subjectAltName; [A-Za-z0-9.-], <= 64 chars
  int days = 825;
  bool force = false;  // replace an existing <name>.pem/.key
};

// init_ca creates <dir>/ca.pem and <dir>/ca.key. Errors: EEXIST (either file exists and !force),
// EINVAL (bad days/name), an errno from mkdir/open/rename, EPROTO (OpenSSL failure, with its
// error text).
[[nodiscard]] Status init_ca(const InitOptions& opt);
// issue signs a certificate for |opt.name| with the CA in |opt.dir|. Errors: ENOENT (no CA:
// run cert init), EEXIST (already issued and !force), EINVAL (bad name or days; the name "ca"
// is reserved), EPROTO (OpenSSL failure or a CA key that does not match ca.pem).
[[nodiscard]] Status issue(const IssueOptions& opt);

// valid_agent_name checks |name| as issue() does.
[[nodiscard]] Status valid_agent_name(const std::string& name);

}  // namespace rendr::cert

// rendr_cert_main is `rendrctl cert ...` with argv[0] = "cert": subcommands init and issue,
// --help. Returns the process exit code (0 ok, 1 failure, 2 usage error).
int rendr_cert_main(int argc, char** argv);
