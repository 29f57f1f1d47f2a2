// SPDX-License-Identifier: Apache-2.0
#include "cert.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

namespace rendr::cert {

namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free_all(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Free>;
using X509Ptr = std::unique_ptr<X509, Free>;
using BioPtr = std::unique_ptr<BIO, Free>;
using BnPtr = std::unique_ptr<BIGNUM, Free>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Free>;

// ssl_error drains OpenSSL's error queue into one EPROTO Error.
Error ssl_error(const std::string& what) {
  std::string detail;
  unsigned long e = 0;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    detail += detail.empty() ? "" : "; ";
    detail += buf;
  }
  return make_error(std::errc::protocol_error,
                    "cert: " + what + (detail.empty() ? "" : " (" + detail + ")"));
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

Status check_days(int days) {
  if (days < 1 || days > 36500) {
    return make_error(std::errc::invalid_argument,
                      "cert: --days must be 1..36500, not " + std::to_string(days));
  }
  return {};
}

Status ensure_dir(const std::string& dir) {
  if (dir.empty()) {
    return make_error(std::errc::invalid_argument, "cert: --dir is required");
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return errno_error("cert: mkdir " + dir);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return errno_error("cert: stat " + dir);
  }
  if (!S_ISDIR(st.st_mode)) {
    return make_error(std::errc::not_a_directory, "cert: " + dir + " is not a directory");
  }
  return {};
}

// write_file writes |data| to |path| with exactly |mode|, via <path>.tmp + fsync + rename.
Status write_file(const std::string& path, const std::string& data, mode_t mode) {
  const std::string tmp = path + ".tmp";
  (void)::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    return errno_error("cert: create " + tmp);
  }
  auto fail = [&](const char* what) {
    int err = errno;
    ::close(fd);
    (void)::unlink(tmp.c_str());
    return errno_error(std::string("cert: ") + what + " " + tmp, err);
  };
  if (::fchmod(fd, mode) != 0) {
    return fail("chmod");
  }
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return fail("write");
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    return fail("fsync");
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    (void)::unlink(tmp.c_str());
    return errno_error("cert: rename to " + path, err);
  }
  return {};
}

Result<std::string> bio_string(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  if (n < 0 || p == nullptr) {
    return ssl_error("read memory BIO");
  }
  return std::string(p, static_cast<std::size_t>(n));
}

Result<std::string> pem_of(X509* x) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_X509(b.get(), x) != 1) {
    return ssl_error("encode certificate");
  }
  return bio_string(b.get());
}

Result<std::string> pem_of(EVP_PKEY* k) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return ssl_error("encode private key");
  }
  return bio_string(b.get());
}

Result<PkeyPtr> new_p256_key() {
  PkeyPtr k(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!k) {
    return ssl_error("generate EC P-256 key");
  }
  return k;
}

Status add_ext(X509* x, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(x, ext.get(), -1) != 1) {
    return ssl_error(std::string("add extension ") + OBJ_nid2sn(nid) + "=" + value);
  }
  return {};
}

// new_cert builds an unsigned v3 certificate for |key| with subject CN=|cn|, a random 159-bit
// serial, valid from 5 minutes ago (clock skew between agents) for |days|.
Result<X509Ptr> new_cert(EVP_PKEY* key, const std::string& cn, int days) {
  X509Ptr x(X509_new());
  if (!x || X509_set_version(x.get(), X509_VERSION_3) != 1) {
    return ssl_error("new certificate");
  }
  BnPtr serial(BN_new());
  if (!serial || BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(x.get())) == nullptr) {
    return ssl_error("serial number");
  }
  if (X509_gmtime_adj(X509_getm_notBefore(x.get()), -300) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(x.get()), days, 0, nullptr) == nullptr) {
    return ssl_error("validity");
  }
  X509_NAME* name = X509_get_subject_name(x.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1) {
    return ssl_error("subject CN");
  }
  if (X509_set_pubkey(x.get(), key) != 1) {
    return ssl_error("public key");
  }
  return x;
}

Result<X509Ptr> load_cert(const std::string& path) {
  BioPtr b(BIO_new_file(path.c_str(), "r"));
  if (!b) {
    ERR_clear_error();
    return errno_error("cert: open " + path, errno != 0 ? errno : ENOENT);
  }
  X509Ptr x(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
  if (!x) {
    return ssl_error("read certificate " + path);
  }
  return x;
}

Result<PkeyPtr> load_key(const std::string& path) {
  BioPtr b(BIO_new_file(path.c_str(), "r"));
  if (!b) {
    ERR_clear_error();
    return errno_error("cert: open " + path, errno != 0 ? errno : ENOENT);
  }
  PkeyPtr k(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
  if (!k) {
    return ssl_error("read private key " + path);
  }
  return k;
}

std::string fingerprint(X509* x) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(x, EVP_sha256(), md, &n) != 1) {
    ERR_clear_error();
    return "?";
  }
  std::string s;
  char buf[4];
  for (unsigned i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%s%02X", i == 0 ? "" : ":", md[i]);
    s += buf;
  }
  return s;
}

}  // namespace

Status valid_agent_name(const std::string& name) {
  if (name.empty() || name.size() > 64) {
    return make_error(std::errc::invalid_argument, "cert: agent name must be 1..64 characters");
  }
  if (name == "ca") {
    return make_error(std::errc::invalid_argument,
                      "cert: the name 'ca' is reserved for the CA's own files");
  }
  if (name[0] == '-' || name[0] == '.' || name.back() == '.' || name.back() == '-') {
    return make_error(std::errc::invalid_argument,
                      "cert: agent name '" + name + "' must not start or end with '-' or '.'");
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.';
    if (!ok) {
      return make_error(std::errc::invalid_argument,
                        "cert: agent name '" + name +
                            "' may only use letters, digits, '-' and '.' (it becomes a DNS "
                            "subjectAltName)");
    }
  }
  return {};
}

Status init_ca(const InitOptions& opt) {
  RENDR_TRY(check_days(opt.days));
  if (opt.ca_name.empty() || opt.ca_name.size() > 64) {
    return make_error(std::errc::invalid_argument, "cert: --ca-name must be 1..64 characters");
  }
  RENDR_TRY(ensure_dir(opt.dir));
  const std::string pem = opt.dir + "/ca.pem";
  const std::string key_path = opt.dir + "/ca.key";
  if (!opt.force && (exists(pem) || exists(key_path))) {
    return make_error(std::errc::file_exists,
                      "cert: a CA already exists in " + opt.dir +
                          " (ca.pem/ca.key); --force replaces it and invalidates every "
                          "certificate it issued");
  }
  ERR_clear_error();
  auto key = new_p256_key();
  if (!key) {
    return std::move(key).take_error();
  }
  auto x = new_cert(key->get(), opt.ca_name, opt.days);
  if (!x) {
    return std::move(x).take_error();
  }
  X509* c = x->get();
  if (X509_set_issuer_name(c, X509_get_subject_name(c)) != 1) {
    return ssl_error("CA issuer name");
  }
  RENDR_TRY(add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  RENDR_TRY(add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign"));
  RENDR_TRY(add_ext(c, c, NID_subject_key_identifier, "hash"));
  RENDR_TRY(add_ext(c, c, NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(c, key->get(), EVP_sha256()) == 0) {
    return ssl_error("sign CA certificate");
  }
  auto key_pem = pem_of(key->get());
  if (!key_pem) {
    return std::move(key_pem).take_error();
  }
  auto cert_pem = pem_of(c);
  if (!cert_pem) {
    return std::move(cert_pem).take_error();
  }
  RENDR_TRY(write_file(key_path, *key_pem, 0600));
  return write_file(pem, *cert_pem, 0644);
}

Status issue(const IssueOptions& opt) {
  RENDR_TRY(valid_agent_name(opt.name));
  RENDR_TRY(check_days(opt.days));
  if (opt.dir.empty()) {
    return make_error(std::errc::invalid_argument, "cert: --dir is required");
  }
  const std::string ca_pem = opt.dir + "/ca.pem";
  const std::string ca_key = opt.dir + "/ca.key";
  if (!exists(ca_pem) || !exists(ca_key)) {
    return make_error(std::errc::no_such_file_or_directory,
                      "cert: no CA in " + opt.dir + " (ca.pem + ca.key); run `rendrctl cert "
                      "init --dir " + opt.dir + "` first");
  }
  const std::string pem = opt.dir + "/" + opt.name + ".pem";
  const std::string key_path = opt.dir + "/" + opt.name + ".key";
  if (!opt.force && (exists(pem) || exists(key_path))) {
    return make_error(std::errc::file_exists, "cert: " + pem + " or " + key_path +
                                                  " already exists; --force replaces it");
  }
  ERR_clear_error();
  auto ca = load_cert(ca_pem);
  if (!ca) {
    return std::move(ca).take_error();
  }
  auto cakey = load_key(ca_key);
  if (!cakey) {
    return std::move(cakey).take_error();
  }
  if (X509_check_private_key(ca->get(), cakey->get()) != 1) {
    return ssl_error("ca.key does not match ca.pem in " + opt.dir);
  }
  auto key = new_p256_key();
  if (!key) {
    return std::move(key).take_error();
  }
  auto x = new_cert(key->get(), opt.name, opt.days);
  if (!x) {
    return std::move(x).take_error();
  }
  X509* c = x->get();
  if (X509_set_issuer_name(c, X509_get_subject_name(ca->get())) != 1) {
    return ssl_error("issuer name");
  }
  const std::string san = "DNS:" + opt.name;
  RENDR_TRY(add_ext(c, ca->get(), NID_basic_constraints, "critical,CA:FALSE"));
  RENDR_TRY(add_ext(c, ca->get(), NID_key_usage, "critical,digitalSignature"));
  RENDR_TRY(add_ext(c, ca->get(), NID_ext_key_usage, "serverAuth,clientAuth"));
  RENDR_TRY(add_ext(c, ca->get(), NID_subject_alt_name, san.c_str()));
  RENDR_TRY(add_ext(c, ca->get(), NID_subject_key_identifier, "hash"));
  RENDR_TRY(add_ext(c, ca->get(), NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(c, cakey->get(), EVP_sha256()) == 0) {
    return ssl_error("sign certificate for " + opt.name);
  }
  auto key_pem = pem_of(key->get());
  if (!key_pem) {
    return std::move(key_pem).take_error();
  }
  auto cert_pem = pem_of(c);
  if (!cert_pem) {
    return std::move(cert_pem).take_error();
  }
  RENDR_TRY(write_file(key_path, *key_pem, 0600));
  return write_file(pem, *cert_pem, 0644);
}

}  // namespace rendr::cert

namespace {

constexpr const char* kCertUsage =
    "usage: rendrctl cert init  --dir D [--ca-name N] [--days N] [--force]\n"
    "       rendrctl cert issue --dir D --name AGENT [--days N] [--force]\n"
    "\n"
    "Certificates for the agent channel (TLS 1.3 with mutual authentication).\n"
    "\n"
    "  init   create a private CA: D/ca.pem (certificate) and D/ca.key (private key, mode\n"
    "         0600). D is created (mode 0700) if missing. Refuses to replace an existing CA\n"
    "         unless --force (which invalidates every certificate the old CA issued).\n"
    "  issue  sign a certificate for agent AGENT: D/AGENT.pem and D/AGENT.key (0600), with\n"
    "         CN=AGENT and subjectAltName DNS:AGENT, usable as TLS client and server.\n"
    "\n"
    "  --dir D        directory holding the CA and the issued files (required)\n"
    "  --ca-name N    init: CA common name (default \"rendr agent CA\")\n"
    "  --days N       validity in days (default 3650 for the CA, 825 for agents)\n"
    "  --name AGENT   issue: agent name, letters/digits/'-'/'.' (becomes a DNS name)\n"
    "  --force        replace existing files\n"
    "\n"
    "Keys are EC P-256, signatures ECDSA-SHA256. Copy ca.pem and the agent's own .pem/.key to\n"
    "each host; ca.key stays with the operator. See docs/certificates.md.\n";

int cert_usage_error(const std::string& msg) {
  std::fprintf(stderr, "rendrctl cert: %s\n(rendrctl cert --help for usage)\n", msg.c_str());
  return 2;
}

std::optional<int> parse_days(const std::string& v) {
  char* end = nullptr;
  errno = 0;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || n < 1 || n > 36500) {
    return std::nullopt;
  }
  return static_cast<int>(n);
}

}  // namespace

int rendr_cert_main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kCertUsage, stderr);
    return 2;
  }
  const std::string sub = argv[1];
  if (sub == "-h" || sub == "--help" || sub == "help") {
    std::fputs(kCertUsage, stdout);
    return 0;
  }
  if (sub != "init" && sub != "issue") {
    return cert_usage_error("unknown subcommand '" + sub + "' (init or issue)");
  }
  std::string dir;
  std::string ca_name;
  std::string name;
  std::optional<int> days;
  bool force = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kCertUsage, stdout);
      return 0;
    }
    if (a == "--force") {
      force = true;
      continue;
    }
    if (a != "--dir" && a != "--ca-name" && a != "--days" && a != "--name") {
      return cert_usage_error("unknown option '" + a + "'");
    }
    if (i + 1 >= argc) {
      return cert_usage_error(a + " needs a value");
    }
    const std::string v = argv[++i];
    if (a == "--dir") {
      dir = v;
    } else if (a == "--ca-name") {
      if (sub != "init") {
        return cert_usage_error("--ca-name is for init");
      }
      ca_name = v;
    } else if (a == "--name") {
      if (sub != "issue") {
        return cert_usage_error("--name is for issue");
      }
      name = v;
    } else {
      days = parse_days(v);
      if (!days) {
        return cert_usage_error("--days takes 1..36500, not '" + v + "'");
      }
    }
  }
  if (dir.empty()) {
    return cert_usage_error("--dir is required");
  }
  rendr::Status st;
  std::string made;
  if (sub == "init") {
    rendr::cert::InitOptions o;
    o.dir = dir;
    if (!ca_name.empty()) {
      o.ca_name = ca_name;
    }
    if (days) {
      o.days = *days;
    }
    o.force = force;
    st = rendr::cert::init_ca(o);
    made = "ca";
  } else {
    if (name.empty()) {
      return cert_usage_error("issue needs --name AGENT");
    }
    rendr::cert::IssueOptions o;
    o.dir = dir;
    o.name = name;
    if (days) {
      o.days = *days;
    }
    o.force = force;
    st = rendr::cert::issue(o);
    made = name;
  }
  if (!st) {
    std::fprintf(stderr, "rendrctl cert %s: %s\n", sub.c_str(), st.error().message().c_str());
    return 1;
  }
  std::string fp = "?";
  if (auto x = rendr::cert::load_cert(dir + "/" + made + ".pem")) {
    fp = rendr::cert::fingerprint(x->get());
  }
  std::printf("wrote %s/%s.pem (SHA-256 %s)\nwrote %s/%s.key (mode 0600)\n", dir.c_str(),
              made.c_str(), fp.c_str(), dir.c_str(), made.c_str());
  return 0;
}
