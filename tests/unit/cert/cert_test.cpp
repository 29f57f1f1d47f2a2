// SPDX-License-Identifier: Apache-2.0
// rendrctl cert init/issue: files, modes, key type, extensions, and chain verification with
// X509_verify_cert (an agent certificate verifies against its CA and not against another CA).
// Hermetic: everything happens in a temp dir made by the test.
#include "rendrctl/cert.hpp"

#include "support/require_result.hpp"

#include <catch2/catch.hpp>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct TempDir {
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "rendr-cert-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string path;
};

int run(std::vector<std::string> args) {
  static char name[] = "cert";
  std::vector<char*> argv{name};
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  const int argc = static_cast<int>(argv.size());
  argv.push_back(nullptr);
  return rendr_cert_main(argc, argv.data());
}

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr load_cert(const std::string& path) {
  BIO* b = BIO_new_file(path.c_str(), "r");
  REQUIRE(b != nullptr);
  X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  REQUIRE(x != nullptr);
  return X509Ptr(x);
}

std::unique_ptr<EVP_PKEY, X509Free> load_key(const std::string& path) {
  BIO* b = BIO_new_file(path.c_str(), "r");
  REQUIRE(b != nullptr);
  EVP_PKEY* k = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  REQUIRE(k != nullptr);
  return std::unique_ptr<EVP_PKEY, X509Free>(k);
}

// verify checks |leaf| against |ca| as the trust anchor for |purpose| (SSL client or server).
// Returns the X509 verify error (X509_V_OK on success).
int verify(X509* ca, X509* leaf, int purpose) {
  std::unique_ptr<X509_STORE, X509Free> store(X509_STORE_new());
  REQUIRE(X509_STORE_add_cert(store.get(), ca) == 1);
  std::unique_ptr<X509_STORE_CTX, X509Free> ctx(X509_STORE_CTX_new());
  REQUIRE(X509_STORE_CTX_init(ctx.get(), store.get(), leaf, nullptr) == 1);
  REQUIRE(X509_STORE_CTX_set_purpose(ctx.get(), purpose) == 1);
  int ok = X509_verify_cert(ctx.get());
  int err = X509_STORE_CTX_get_error(ctx.get());
  ERR_clear_error();
  return ok == 1 ? X509_V_OK : (err == X509_V_OK ? -1 : err);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("cert init creates a CA once and refuses to overwrite it", "[cert][init]") {
  TempDir t;
  const std::string dir = t.path + "/pki";  // created by init
  REQUIRE(run({"init", "--dir", dir, "--ca-name", "lab CA", "--days", "30"}) == 0);
  CHECK(mode_of(dir) == 0700);
  CHECK(mode_of(dir + "/ca.key") == 0600);
  CHECK(mode_of(dir + "/ca.pem") == 0644);
  CHECK_FALSE(fs::exists(dir + "/ca.pem.tmp"));

  auto ca = load_cert(dir + "/ca.pem");
  auto key = load_key(dir + "/ca.key");
  CHECK(X509_check_private_key(ca.get(), key.get()) == 1);
  CHECK(X509_check_ca(ca.get()) >= 1);
  CHECK(X509_check_issued(ca.get(), ca.get()) == X509_V_OK);  // self-signed
  char cn[128] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(ca.get()), NID_commonName, cn, sizeof cn);
  CHECK(std::string(cn) == "lab CA");
  CHECK(EVP_PKEY_get_base_id(key.get()) == EVP_PKEY_EC);
  char group[64] = {};
  std::size_t glen = 0;
  REQUIRE(EVP_PKEY_get_group_name(key.get(), group, sizeof group, &glen) == 1);
  CHECK(std::string(group) == "prime256v1");

  const std::string before = slurp(dir + "/ca.pem");
  CHECK(rendr_cert_main(0, nullptr) == 2);  // no arguments: usage
  CHECK(run({"init", "--dir", dir}) == 1);  // exists
  CHECK(slurp(dir + "/ca.pem") == before);
  rendr::cert::InitOptions o;
  o.dir = dir;
  auto again = rendr::cert::init_ca(o);
  REQUIRE_ERROR(again, std::errc::file_exists, "already exists");
  REQUIRE(run({"init", "--dir", dir, "--force"}) == 0);
  CHECK(slurp(dir + "/ca.pem") != before);
}

TEST_CASE("cert issue signs an agent certificate that verifies against the CA only",
          "[cert][issue]") {
  TempDir t;
  const std::string dir = t.path;
  REQUIRE(run({"init", "--dir", dir}) == 0);
  REQUIRE(run({"issue", "--dir", dir, "--name", "host-a", "--days", "10"}) == 0);
  REQUIRE(run({"issue", "--dir", dir, "--name", "host-b"}) == 0);
  CHECK(mode_of(dir + "/host-a.key") == 0600);
  CHECK(mode_of(dir + "/host-a.pem") == 0644);

  auto ca = load_cert(dir + "/ca.pem");
  auto a = load_cert(dir + "/host-a.pem");
  auto b = load_cert(dir + "/host-b.pem");
  auto akey = load_key(dir + "/host-a.key");
  CHECK(X509_check_private_key(a.get(), akey.get()) == 1);
  CHECK(EVP_PKEY_get_base_id(akey.get()) == EVP_PKEY_EC);
  CHECK(EVP_PKEY_get_bits(akey.get()) == 256);

  // Chain verification, both TLS roles (agents are client and server of each other).
  CHECK(verify(ca.get(), a.get(), X509_PURPOSE_SSL_SERVER) == X509_V_OK);
  CHECK(verify(ca.get(), a.get(), X509_PURPOSE_SSL_CLIENT) == X509_V_OK);
  CHECK(verify(ca.get(), b.get(), X509_PURPOSE_SSL_SERVER) == X509_V_OK);

  // Name: CN and DNS subjectAltName; not a CA; serials differ.
  char cn[128] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(a.get()), NID_commonName, cn, sizeof cn);
  CHECK(std::string(cn) == "host-a");
  CHECK(X509_check_host(a.get(), "host-a", 0, 0, nullptr) == 1);
  CHECK(X509_check_host(a.get(), "host-b", 0, 0, nullptr) == 0);
  CHECK(X509_check_ca(a.get()) == 0);
  CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(a.get()), X509_get0_serialNumber(b.get())) != 0);
  CHECK((X509_get_extended_key_usage(a.get()) & (XKU_SSL_SERVER | XKU_SSL_CLIENT)) ==
        (XKU_SSL_SERVER | XKU_SSL_CLIENT));

  // A different CA does not vouch for it, nor does the agent's CA vouch for the other's certs.
  TempDir other;
  REQUIRE(run({"init", "--dir", other.path, "--ca-name", "rendr agent CA"}) == 0);  // same CN
  REQUIRE(run({"issue", "--dir", other.path, "--name", "host-a"}) == 0);
  auto ca2 = load_cert(other.path + "/ca.pem");
  auto a2 = load_cert(other.path + "/host-a.pem");
  CHECK(verify(ca2.get(), a.get(), X509_PURPOSE_SSL_SERVER) != X509_V_OK);
  CHECK(verify(ca.get(), a2.get(), X509_PURPOSE_SSL_CLIENT) != X509_V_OK);
  CHECK(verify(ca2.get(), a2.get(), X509_PURPOSE_SSL_CLIENT) == X509_V_OK);

  // An agent certificate is not a CA: it cannot vouch for a sibling.
  CHECK(verify(a.get(), b.get(), X509_PURPOSE_SSL_SERVER) != X509_V_OK);
}

TEST_CASE("cert issue errors: no CA, existing files, bad names and days", "[cert][errors]") {
  TempDir t;
  rendr::cert::IssueOptions o;
  o.dir = t.path;
  o.name = "agent1";
  REQUIRE_ERROR(rendr::cert::issue(o), std::errc::no_such_file_or_directory, "cert init");
  REQUIRE(run({"init", "--dir", t.path}) == 0);
  REQUIRE_OK(rendr::cert::issue(o));
  const std::string before = slurp(t.path + "/agent1.pem");
  REQUIRE_ERROR(rendr::cert::issue(o), std::errc::file_exists, "--force");
  CHECK(slurp(t.path + "/agent1.pem") == before);
  o.force = true;
  REQUIRE_OK(rendr::cert::issue(o));
  CHECK(slurp(t.path + "/agent1.pem") != before);

  for (const char* bad : {"", "ca", "-x", "a b", "../evil", "x_y", "dot."}) {
    o.name = bad;
    REQUIRE_ERROR(rendr::cert::issue(o), std::errc::invalid_argument, "");
  }
  CHECK(run({"issue", "--dir", t.path, "--name", "ok", "--days", "0"}) == 2);
  CHECK(run({"issue", "--dir", t.path}) == 2);  // --name missing
  CHECK(run({"issue", "--name", "x"}) == 2);  // --dir missing
  CHECK(run({"frobnicate"}) == 2);
  CHECK(run({"--help"}) == 0);

  // A CA key that does not belong to ca.pem is refused.
  TempDir other;
  REQUIRE(run({"init", "--dir", other.path}) == 0);
  fs::copy_file(other.path + "/ca.key", t.path + "/ca.key", fs::copy_options::overwrite_existing);
  o.name = "agent2";
  REQUIRE_ERROR(rendr::cert::issue(o), std::errc::protocol_error, "does not match");
}
