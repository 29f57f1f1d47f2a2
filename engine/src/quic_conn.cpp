// SPDX-License-Identifier: Apache-2.0
// QuicConn: the QUIC protocol state of one quic carrier over ngtcp2 0.12 with GnuTLS
// (quic_conn.hpp). I/O-free: bytes and timestamps in, bytes out.
#include "quic_conn.hpp"

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <algorithm>
#include <cstring>
#include <system_error>

namespace rendr::detail {

namespace {

// TLS 1.3 only (QUIC), the groups and ciphers ngtcp2's GnuTLS backend handles.
constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:"
    "%DISABLE_TLS13_COMPAT_MODE";
constexpr std::size_t kScidLen = 16;
constexpr std::size_t kMaxUdpPayload = 1452;

void rand_bytes(std::uint8_t* dest, std::size_t len) {
  (void)gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

void rand_cb(std::uint8_t* dest, std::size_t len, const ngtcp2_rand_ctx*) { rand_bytes(dest, len); }

ngtcp2_addr addr_of(const QuicAddr& a) {
  ngtcp2_addr out{};
  out.addr = const_cast<ngtcp2_sockaddr*>(reinterpret_cast<const ngtcp2_sockaddr*>(&a.ss));
  out.addrlen = a.len;
  return out;
}

Error tls_error(const std::string& what, int rv) {
  return make_error(std::errc::invalid_argument, what + ": " + gnutls_strerror(rv));
}

}  // namespace

// --- credentials ---

QuicCreds::~QuicCreds() {
  if (cred_ != nullptr) {
    gnutls_certificate_free_credentials(static_cast<gnutls_certificate_credentials_t>(cred_));
  }
}

Result<std::shared_ptr<QuicCreds>> QuicCreds::load(const std::string& ca, const std::string& cert,
                                                   const std::string& key) {
  std::shared_ptr<QuicCreds> c(new QuicCreds());
  gnutls_certificate_credentials_t cred = nullptr;
  if (const int rv = gnutls_certificate_allocate_credentials(&cred); rv != 0) {
    return tls_error("quic credentials", rv);
  }
  c->cred_ = cred;
  if (!ca.empty()) {
    const int n = gnutls_certificate_set_x509_trust_file(cred, ca.c_str(), GNUTLS_X509_FMT_PEM);
    if (n <= 0) {
      return make_error(std::errc::invalid_argument,
                        "quic ca \"" + ca + "\": " +
                            (n == 0 ? std::string("no certificate in it") : gnutls_strerror(n)));
    }
  }
  if (cert.empty() != key.empty()) {
    return make_error(std::errc::invalid_argument, "quic: cert and key go together");
  }
  if (!cert.empty()) {
    const int rv = gnutls_certificate_set_x509_key_file(cred, cert.c_str(), key.c_str(),
                                                        GNUTLS_X509_FMT_PEM);
    if (rv < 0) {
      return tls_error("quic cert \"" + cert + "\" / key \"" + key + "\"", rv);
    }
  }
  return c;
}

// --- callbacks ---

struct QuicConn::ConnRef {
  ngtcp2_crypto_conn_ref ref{};
  QuicConn* self = nullptr;
};

struct QuicConn::Cb {
  static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* r) {
    return static_cast<QuicConn*>(r->user_data)->conn_;
  }
  static int handshake_completed(ngtcp2_conn*, void* ud) {
    auto* self = static_cast<QuicConn*>(ud);
    self->handshake_done_ = true;
    if (self->server_) {
      self->ready_ = true;  // the server's stream comes with the client's first bytes
    }
    return 0;
  }
  static int handshake_confirmed(ngtcp2_conn* conn, void* ud) {
    auto* self = static_cast<QuicConn*>(ud);
    self->confirmed_ = true;
    if (!self->server_ && self->datagram_) {
      self->ready_ = true;  // datagram mode: no stream
    } else if (!self->server_ && self->stream_ < 0) {
      if (ngtcp2_conn_open_bidi_stream(conn, &self->stream_, nullptr) != 0) {
        return NGTCP2_ERR_CALLBACK_FAILURE;
      }
      self->ready_ = true;
    }
    return 0;
  }
  static int stream_open(ngtcp2_conn*, std::int64_t id, void* ud) {
    auto* self = static_cast<QuicConn*>(ud);
    if (self->server_ && self->stream_ < 0 && (id & 0x3) == 0) {
      self->stream_ = id;  // the client's first bidirectional stream
    }
    return 0;
  }
  static int recv_stream_data(ngtcp2_conn*, std::uint32_t, std::int64_t id, std::uint64_t,
                              const std::uint8_t* data, std::size_t len, void* ud, void*) {
    auto* self = static_cast<QuicConn*>(ud);
    if (id != self->stream_) {
      return 0;  // only one stream carries frames; others are ignored (never credited)
    }
    if (self->rpos_ > 0 && self->rpos_ == self->recv_.size()) {
      self->recv_.clear();
      self->rpos_ = 0;
    } else if (self->rpos_ >= (1U << 20) && self->rpos_ * 2 >= self->recv_.size()) {
      self->recv_.erase(self->recv_.begin(),
                        self->recv_.begin() + static_cast<std::ptrdiff_t>(self->rpos_));
      self->rpos_ = 0;
    }
    const auto* b = reinterpret_cast<const std::byte*>(data);
    self->recv_.insert(self->recv_.end(), b, b + len);
    return 0;
  }
  static int acked(ngtcp2_conn*, std::int64_t id, std::uint64_t offset, std::uint64_t len, void* ud,
                   void*) {
    auto* self = static_cast<QuicConn*>(ud);
    if (id != self->stream_) {
      return 0;
    }
    self->acked_ = std::max(self->acked_, offset + len);
    while (!self->chunks_.empty() && self->base_ + self->chunks_.front().size() <= self->acked_) {
      self->base_ += self->chunks_.front().size();
      self->chunks_.pop_front();
    }
    return 0;
  }
  static int stream_close(ngtcp2_conn*, std::uint32_t, std::int64_t id, std::uint64_t code,
                          void* ud, void*) {
    auto* self = static_cast<QuicConn*>(ud);
    if (id == self->stream_) {
      self->fail(make_error(std::errc::connection_reset,
                            "quic: the peer closed the stream (code " + std::to_string(code) + ")"));
    }
    return 0;
  }
  static int recv_datagram(ngtcp2_conn*, std::uint32_t, const std::uint8_t* data,
                           std::size_t len, void* ud) {
    auto* self = static_cast<QuicConn*>(ud);
    const auto* b = reinterpret_cast<const std::byte*>(data);
    self->dgram_in_.push_back(self->dgram_buffer(std::span<const std::byte>(b, len)));
    return 0;
  }
  static int recv_stateless_reset(ngtcp2_conn*, const ngtcp2_pkt_stateless_reset*, void* ud) {
    static_cast<QuicConn*>(ud)->got_reset_ = true;
    return 0;
  }
  static int new_cid(ngtcp2_conn*, ngtcp2_cid* cid, std::uint8_t* token, std::size_t cidlen,
                     void* ud) {
    auto* self = static_cast<QuicConn*>(ud);
    rand_bytes(cid->data, cidlen);
    cid->datalen = cidlen;
    rand_bytes(token, NGTCP2_STATELESS_RESET_TOKENLEN);
    if (self->hooks_.cid_added) {
      self->hooks_.cid_added(std::span<const std::uint8_t>(cid->data, cid->datalen));
    }
    return 0;
  }
  static int remove_cid(ngtcp2_conn*, const ngtcp2_cid* cid, void* ud) {
    auto* self = static_cast<QuicConn*>(ud);
    if (self->hooks_.cid_removed) {
      self->hooks_.cid_removed(std::span<const std::uint8_t>(cid->data, cid->datalen));
    }
    return 0;
  }
};

namespace {

ngtcp2_callbacks callbacks(bool server) {
  ngtcp2_callbacks cb{};
  if (server) {
    cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
  }
  cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb.encrypt = ngtcp2_crypto_encrypt_cb;
  cb.decrypt = ngtcp2_crypto_decrypt_cb;
  cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb.update_key = ngtcp2_crypto_update_key_cb;
  cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb.rand = rand_cb;
  cb.handshake_completed = QuicConn::Cb::handshake_completed;
  cb.handshake_confirmed = QuicConn::Cb::handshake_confirmed;
  cb.stream_open = QuicConn::Cb::stream_open;
  cb.recv_stream_data = QuicConn::Cb::recv_stream_data;
  cb.acked_stream_data_offset = QuicConn::Cb::acked;
  cb.stream_close = QuicConn::Cb::stream_close;
  cb.get_new_connection_id = QuicConn::Cb::new_cid;
  cb.remove_connection_id = QuicConn::Cb::remove_cid;
  cb.recv_datagram = QuicConn::Cb::recv_datagram;
  cb.recv_stateless_reset = QuicConn::Cb::recv_stateless_reset;
  return cb;
}

void fill_settings(ngtcp2_settings& st, ngtcp2_transport_params& tp, const QuicSettings& s,
                   QuicTime now) {
  ngtcp2_settings_default(&st);
  st.initial_ts = now;
  st.max_tx_udp_payload_size = kMaxUdpPayload;
  st.handshake_timeout = s.handshake_timeout;
  if (s.initial_rtt != 0) {
    st.initial_rtt = s.initial_rtt;
  }
  // A fixed window: credit follows what the engine read (QuicConn::read), no auto-tuning.
  st.max_window = s.window;
  st.max_stream_window = s.window;
  ngtcp2_transport_params_default(&tp);
  tp.initial_max_stream_data_bidi_local = s.window;
  tp.initial_max_stream_data_bidi_remote = s.window;
  tp.initial_max_data = s.window;
  tp.initial_max_streams_bidi = 1;
  tp.initial_max_streams_uni = 0;
  tp.max_idle_timeout = s.idle_timeout;
  tp.active_connection_id_limit = 8;
  tp.max_udp_payload_size = 1500;  // what QuicRecvBatch's slots take
  // Every connection takes DATAGRAM frames (a listener serves both modes; docs/wire.md).
  tp.max_datagram_frame_size = 65535;
}

}  // namespace

QuicConn::~QuicConn() {
  if (conn_ != nullptr) {
    ngtcp2_conn_del(conn_);
  }
  if (session_ != nullptr) {
    gnutls_deinit(static_cast<gnutls_session_t>(session_));
  }
}

namespace {

Status setup_session(gnutls_session_t s, void* ref, void* cred, const QuicSettings& qs,
                     bool server) {
  int rv = gnutls_priority_set_direct(s, kPriority, nullptr);
  if (rv != 0) {
    return tls_error("quic tls priority", rv);
  }
  rv = server ? ngtcp2_crypto_gnutls_configure_server_session(s)
              : ngtcp2_crypto_gnutls_configure_client_session(s);
  if (rv != 0) {
    return make_error(std::errc::invalid_argument, "quic: configure tls session");
  }
  gnutls_session_set_ptr(s, ref);
  rv = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
  if (rv != 0) {
    return tls_error("quic tls credentials", rv);
  }
  gnutls_datum_t alpn{reinterpret_cast<unsigned char*>(const_cast<char*>(qs.alpn.data())),
                      static_cast<unsigned>(qs.alpn.size())};
  rv = gnutls_alpn_set_protocols(s, &alpn, 1, GNUTLS_ALPN_MANDATORY);
  if (rv != 0) {
    return tls_error("quic alpn", rv);
  }
  if (server) {
    gnutls_certificate_server_set_request(s, qs.verify_peer ? GNUTLS_CERT_REQUIRE
                                                            : GNUTLS_CERT_IGNORE);
  } else if (!qs.server_name.empty()) {
    rv = gnutls_server_name_set(s, GNUTLS_NAME_DNS, qs.server_name.data(), qs.server_name.size());
    if (rv != 0) {
      return tls_error("quic server_name", rv);
    }
  }
  if (qs.verify_peer) {
    gnutls_session_set_verify_cert(s, server || qs.server_name.empty() ? nullptr
                                                                        : qs.server_name.c_str(),
                                   0);
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<QuicConn>> QuicConn::client(std::shared_ptr<QuicCreds> creds,
                                                   const QuicSettings& s, const QuicAddr& local,
                                                   const QuicAddr& remote, QuicTime now) {
  std::unique_ptr<QuicConn> q(new QuicConn());
  q->creds_ = std::move(creds);
  q->alpn_ = s.alpn;
  q->datagram_ = s.datagram;
  q->window_ = s.window;
  q->local_ = local;
  q->remote_ = remote;
  q->ref_ = std::make_unique<ConnRef>();
  q->ref_->ref.get_conn = Cb::get_conn;
  q->ref_->ref.user_data = q.get();
  ngtcp2_cid dcid{};
  ngtcp2_cid scid{};
  dcid.datalen = 18;
  rand_bytes(dcid.data, dcid.datalen);
  scid.datalen = kScidLen;
  rand_bytes(scid.data, scid.datalen);
  ngtcp2_settings st;
  ngtcp2_transport_params tp;
  fill_settings(st, tp, s, now);
  const ngtcp2_path path{addr_of(local), addr_of(remote), nullptr};
  const auto cb = callbacks(false);
  int rv = ngtcp2_conn_client_new(&q->conn_, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &st,
                                  &tp, nullptr, q.get());
  if (rv != 0) {
    return make_error(std::errc::invalid_argument,
                      std::string("quic: ngtcp2_conn_client_new: ") + ngtcp2_strerror(rv));
  }
  gnutls_session_t sess = nullptr;
  rv = gnutls_init(&sess, GNUTLS_CLIENT | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA);
  if (rv != 0) {
    return tls_error("quic gnutls_init", rv);
  }
  q->session_ = sess;
  RENDR_TRY(setup_session(sess, &q->ref_->ref, q->creds_->native(), s, false));
  ngtcp2_conn_set_tls_native_handle(q->conn_, sess);
  return q;
}

Result<std::unique_ptr<QuicConn>> QuicConn::server(std::shared_ptr<QuicCreds> creds,
                                                   const QuicSettings& s, const ngtcp2_pkt_hd& hd,
                                                   const QuicAddr& local, const QuicAddr& remote,
                                                   Hooks hooks, QuicTime now) {
  std::unique_ptr<QuicConn> q(new QuicConn());
  q->creds_ = std::move(creds);
  q->alpn_ = s.alpn;
  q->server_ = true;
  q->window_ = s.window;
  q->hooks_ = std::move(hooks);
  q->local_ = local;
  q->remote_ = remote;
  q->ref_ = std::make_unique<ConnRef>();
  q->ref_->ref.get_conn = Cb::get_conn;
  q->ref_->ref.user_data = q.get();
  ngtcp2_cid scid{};
  scid.datalen = kScidLen;
  rand_bytes(scid.data, scid.datalen);
  ngtcp2_settings st;
  ngtcp2_transport_params tp;
  fill_settings(st, tp, s, now);
  tp.original_dcid = hd.dcid;
  rand_bytes(q->reset_token_, sizeof q->reset_token_);
  std::memcpy(tp.stateless_reset_token, q->reset_token_, sizeof q->reset_token_);
  tp.stateless_reset_token_present = 1;
  const ngtcp2_path path{addr_of(local), addr_of(remote), nullptr};
  const auto cb = callbacks(true);
  int rv = ngtcp2_conn_server_new(&q->conn_, &hd.scid, &scid, &path, hd.version, &cb, &st, &tp,
                                  nullptr, q.get());
  if (rv != 0) {
    return make_error(std::errc::invalid_argument,
                      std::string("quic: ngtcp2_conn_server_new: ") + ngtcp2_strerror(rv));
  }
  if (q->hooks_.cid_added) {
    q->hooks_.cid_added(std::span<const std::uint8_t>(scid.data, scid.datalen));
  }
  gnutls_session_t sess = nullptr;
  rv = gnutls_init(&sess, GNUTLS_SERVER | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA);
  if (rv != 0) {
    return tls_error("quic gnutls_init", rv);
  }
  q->session_ = sess;
  RENDR_TRY(setup_session(sess, &q->ref_->ref, q->creds_->native(), s, true));
  ngtcp2_conn_set_tls_native_handle(q->conn_, sess);
  return q;
}

void QuicConn::fail(Error e) {
  if (!failed_) {
    failed_ = std::move(e);
    ready_ = false;
  }
}

Error QuicConn::describe_failure(int liberr, const char* what) const {
  std::string msg = std::string("quic ") + what + ": ";
  auto ec = std::make_error_code(std::errc::connection_reset);
  auto* sess = static_cast<gnutls_session_t>(session_);
  if (liberr == NGTCP2_ERR_IDLE_CLOSE) {
    return make_error(std::errc::timed_out, "quic: idle timeout (no packet from the peer)");
  }
  if (got_reset_) {
    return make_error(std::errc::connection_reset,
                      "quic: stateless reset (the peer lost the connection's state)");
  }
  if (liberr == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    return make_error(std::errc::timed_out, msg + "handshake timeout");
  }
  if (liberr == NGTCP2_ERR_DRAINING || liberr == NGTCP2_ERR_CLOSING) {
    ngtcp2_connection_close_error cc{};
    ngtcp2_conn_get_connection_close_error(conn_, &cc);
    if (cc.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT &&
        cc.error_code >= NGTCP2_CRYPTO_ERROR && cc.error_code < NGTCP2_CRYPTO_ERROR + 256) {
      const auto alert = static_cast<gnutls_alert_description_t>(cc.error_code & 0xff);
      const char* name = gnutls_alert_get_strname(alert);
      msg += std::string("the peer refused the TLS handshake (alert ") +
             (name != nullptr ? name : std::to_string(alert).c_str()) + ")";
      if (alert == GNUTLS_A_NO_APPLICATION_PROTOCOL) {
        msg += ": no common ALPN (ours \"" + alpn_ + "\")";
      } else if (alert == GNUTLS_A_CERTIFICATE_REQUIRED || alert == GNUTLS_A_BAD_CERTIFICATE ||
                 alert == GNUTLS_A_UNKNOWN_CA || alert == GNUTLS_A_DECRYPT_ERROR) {
        msg += ": it does not trust our certificate";
      }
      return make_error(std::errc::permission_denied, msg);
    }
    return Error{ec, "quic: peer closed (code " + std::to_string(cc.error_code) + ", " +
                         (cc.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION
                              ? "application"
                              : "transport") +
                         ")"};
  }
  if (liberr == NGTCP2_ERR_CRYPTO) {
    const int tls = ngtcp2_conn_get_tls_error(conn_);
    const unsigned status = sess != nullptr ? gnutls_session_get_verify_cert_status(sess) : 0;
    if (status != 0) {
      gnutls_datum_t out{};
      std::string text = "certificate rejected";
      if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
        text.assign(reinterpret_cast<const char*>(out.data), out.size);
        gnutls_free(out.data);
      }
      return make_error(std::errc::permission_denied,
                        msg + "the peer's certificate failed verification: " + text);
    }
    if (tls == GNUTLS_E_NO_APPLICATION_PROTOCOL) {
      return make_error(std::errc::permission_denied,
                        msg + "no common ALPN (ours \"" + alpn_ + "\")");
    }
    if (tls == GNUTLS_E_NO_CERTIFICATE_FOUND || tls == GNUTLS_E_CERTIFICATE_REQUIRED) {
      return make_error(std::errc::permission_denied,
                        msg + "the peer sent no certificate (mutual TLS required)");
    }
    return make_error(std::errc::permission_denied,
                      msg + "TLS handshake failed: " +
                          (tls != 0 ? gnutls_strerror(tls) : ngtcp2_strerror(liberr)));
  }
  return Error{ec, msg + ngtcp2_strerror(liberr)};
}

void QuicConn::on_datagram(std::span<const std::byte> pkt, const QuicAddr& from, QuicTime now,
                           const QuicAddr* to) {
  if (failed_) {
    return;
  }
  const ngtcp2_path path{addr_of(to != nullptr ? *to : local_), addr_of(from), nullptr};
  ngtcp2_pkt_info pi{};
  const int rv = ngtcp2_conn_read_pkt(conn_, &path, &pi,
                                      reinterpret_cast<const std::uint8_t*>(pkt.data()),
                                      pkt.size(), now);
  if (rv != 0) {
    if (rv == NGTCP2_ERR_DROP_CONN || rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_CLOSING ||
        rv == NGTCP2_ERR_CRYPTO || ngtcp2_err_is_fatal(rv) != 0 || !handshake_done_) {
      fail_and_tell(rv, now);
    }
    return;
  }
  // The server follows the client to a new address (QUIC migration): replies go there.
  if (server_) {
    const ngtcp2_path* cur = ngtcp2_conn_get_path(conn_);
    if (cur != nullptr && cur->remote.addrlen <= sizeof remote_.ss) {
      std::memcpy(&remote_.ss, cur->remote.addr, cur->remote.addrlen);
      remote_.len = cur->remote.addrlen;
    }
  }
}

void QuicConn::arm_probe_timeout() {
  // ngtcp2 0.12 counts a packet that carries only DATAGRAM frames as ack-eliciting but not as
  // "PTO-eliciting" (fixed upstream in 0.14, "Make DATAGRAM PTO-eliciting"): such packets in
  // flight arm no probe timeout. When they are lost whole - the tail of a burst, or a burst
  // a full receive buffer dropped - nothing ever detects the loss: no later packet gets
  // acknowledged (packet and time thresholds never trigger) and no probe timeout fires, and
  // once the lost bytes fill the congestion window the connection sends nothing at all - not
  // even the engine's probes - until its idle timeout. (Only ACK-only packets still leave.)
  // Remedy: every packet that may carry a DATAGRAM frame also carries a MAX_DATA frame (the
  // connection credit raised by one window: the datagram mode has no stream, and the peer's
  // one stream stays bounded by its stream window), which ngtcp2 treats as PTO-eliciting. Then
  // every ack-eliciting packet in flight keeps QUIC's own tail-loss recovery running, as
  // upstream's fix does. Its cost is 9 bytes per packet (a 1 150-byte frame still fits).
  // Anchoring only when no probe timeout was armed (an earlier version) left a hole: the
  // acknowledgement of the one anchored packet could also report a loss, shrink the window
  // below what was in flight and leave only unanchored packets there; lost too, they stalled
  // the sender for good (quic_conn_test "keeps sending through random and burst loss").
  // Stream connections never need it (STREAM frames are PTO-eliciting).
  // (ngtcp2 confirms a server's handshake when it completes, without the callback.)
  if (dgram_out_.empty() || stream_ >= 0 || !(server_ ? handshake_done_ : confirmed_)) {
    return;
  }
  ngtcp2_conn_extend_max_offset(conn_, window_);
  ++pto_anchors_;
}

void QuicConn::fail_and_tell(int liberr, QuicTime now) {
  fail(describe_failure(liberr, handshake_done_ ? "connection" : "handshake"));
  // The peer learns why (a TLS alert for a refused certificate or ALPN) unless the connection
  // is over already (the peer closed it, idle timeout, a packet to drop the connection for).
  if (liberr == NGTCP2_ERR_DRAINING || liberr == NGTCP2_ERR_CLOSING ||
      liberr == NGTCP2_ERR_DROP_CONN || liberr == NGTCP2_ERR_IDLE_CLOSE ||
      liberr == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    return;
  }
  ngtcp2_connection_close_error cc{};
  if (liberr == NGTCP2_ERR_CRYPTO) {
    ngtcp2_connection_close_error_set_transport_error_tls_alert(
        &cc, ngtcp2_conn_get_tls_alert(conn_), nullptr, 0);
  } else {
    ngtcp2_connection_close_error_set_transport_error_liberr(&cc, liberr, nullptr, 0);
  }
  bye_.resize(kMaxUdpPayload);
  ngtcp2_path_storage ps{};
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  const ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
      conn_, &ps.path, &pi, reinterpret_cast<std::uint8_t*>(bye_.data()), bye_.size(), &cc, now);
  bye_.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
}

void QuicConn::produce(QuicTime now, std::size_t max_packets,
                       const std::function<void(std::span<const std::byte>)>& emit) {
  if (!bye_.empty()) {
    tx_local_ = local_;
    tx_remote_ = remote_;
    emit(bye_);
    bye_.clear();
  }
  if (failed_) {
    return;
  }
  pkt_.resize(kMaxUdpPayload);
  bool blocked = false;
  bool packing = false;  // a DATAGRAM packet is open (WRITE_MORE): it continues
  for (std::size_t n = 0; n < max_packets;) {
    if (!packing) {
      arm_probe_timeout();
    }
    if (!dgram_out_.empty()) {
      // DATAGRAM frames, several per packet where they fit (WRITE_MORE: the same packet
      // continues with the next one, or is closed by the writev_stream below).
      ngtcp2_path_storage ps{};
      ngtcp2_path_storage_zero(&ps);
      ngtcp2_pkt_info pi{};
      int accepted = 0;
      const auto& d = dgram_out_.front();
      ngtcp2_vec v{reinterpret_cast<std::uint8_t*>(const_cast<std::byte*>(d.data())), d.size()};
      const ngtcp2_ssize nw = ngtcp2_conn_writev_datagram(
          conn_, &ps.path, &pi, reinterpret_cast<std::uint8_t*>(pkt_.data()), pkt_.size(),
          &accepted, NGTCP2_WRITE_DATAGRAM_FLAG_MORE, 0, &v, 1, now);
      if (accepted != 0) {
        recycle_datagram(std::move(dgram_out_.front()));
        dgram_out_.pop_front();
      }
      packing = nw == NGTCP2_ERR_WRITE_MORE;
      if (packing) {
        continue;
      }
      if (nw < 0) {
        fail(describe_failure(static_cast<int>(nw), "datagram write"));
        return;
      }
      if (nw == 0) {
        break;  // congestion window full: the rest waits for ACKs
      }
      note_tx_path(ps.path);
      emit(std::span<const std::byte>(pkt_.data(), static_cast<std::size_t>(nw)));
      ++n;
      continue;
    }
    ngtcp2_vec vec[16];
    std::size_t nvec = 0;
    if (!blocked && stream_ >= 0 && sent_ < end_) {
      std::uint64_t off = base_;
      for (const auto& c : chunks_) {
        const std::uint64_t cend = off + c.size();
        if (cend > sent_ && nvec < 16) {
          const std::size_t skip = sent_ > off ? static_cast<std::size_t>(sent_ - off) : 0;
          vec[nvec].base = reinterpret_cast<std::uint8_t*>(const_cast<std::byte*>(c.data())) + skip;
          vec[nvec].len = c.size() - skip;
          ++nvec;
        }
        off = cend;
      }
    }
    ngtcp2_path_storage ps{};
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    ngtcp2_ssize datalen = -1;
    const std::int64_t sid = nvec > 0 ? stream_ : -1;
    const ngtcp2_ssize nw = ngtcp2_conn_writev_stream(
        conn_, &ps.path, &pi, reinterpret_cast<std::uint8_t*>(pkt_.data()), pkt_.size(),
        &datalen, NGTCP2_WRITE_STREAM_FLAG_NONE, sid, nvec > 0 ? vec : nullptr, nvec, now);
    if (nw < 0) {
      if (nw == NGTCP2_ERR_STREAM_DATA_BLOCKED || nw == NGTCP2_ERR_STREAM_SHUT_WR ||
          nw == NGTCP2_ERR_STREAM_NOT_FOUND) {
        blocked = true;
        continue;
      }
      fail(describe_failure(static_cast<int>(nw), "write"));
      return;
    }
    if (datalen > 0) {
      sent_ += static_cast<std::uint64_t>(datalen);
    }
    if (nw == 0) {
      break;
    }
    note_tx_path(ps.path);
    emit(std::span<const std::byte>(pkt_.data(), static_cast<std::size_t>(nw)));
    ++n;
  }
  ngtcp2_conn_update_pkt_tx_time(conn_, now);
}

QuicTime QuicConn::expiry() const { return ngtcp2_conn_get_expiry(conn_); }

void QuicConn::on_expiry(QuicTime now) {
  if (failed_) {
    return;
  }
  const int rv = ngtcp2_conn_handle_expiry(conn_, now);
  if (rv != 0) {
    fail_and_tell(rv, now);
  }
}

std::vector<std::byte> QuicConn::close(QuicTime now, const std::string& why) {
  std::vector<std::byte> out;
  if (!failed_ && ngtcp2_conn_is_in_closing_period(conn_) == 0 &&
      ngtcp2_conn_is_in_draining_period(conn_) == 0) {
    out.resize(kMaxUdpPayload);
    ngtcp2_connection_close_error cc{};
    ngtcp2_connection_close_error_set_application_error(&cc, 0, nullptr, 0);
    ngtcp2_path_storage ps{};
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    const ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
        conn_, &ps.path, &pi, reinterpret_cast<std::uint8_t*>(out.data()), out.size(), &cc, now);
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  }
  fail(make_error(std::errc::not_connected, "quic: " + why));
  return out;
}

std::string QuicConn::alpn() const {
  gnutls_datum_t p{};
  if (session_ == nullptr ||
      gnutls_alpn_get_selected_protocol(static_cast<gnutls_session_t>(session_), &p) != 0) {
    return {};
  }
  return std::string(reinterpret_cast<const char*>(p.data), p.size);
}

std::size_t QuicConn::read(std::span<std::byte> buf) {
  const std::size_t n = std::min(buf.size(), readable());
  std::memcpy(buf.data(), recv_.data() + rpos_, n);
  consume(n);
  return n;
}

void QuicConn::consume(std::size_t n) {
  rpos_ += n;
  if (n > 0 && stream_ >= 0 && !failed_) {
    (void)ngtcp2_conn_extend_max_stream_offset(conn_, stream_, n);
    ngtcp2_conn_extend_max_offset(conn_, n);
  }
}

void QuicConn::write(std::span<const std::byte> data) {
  if (data.empty()) {
    return;
  }
  chunks_.emplace_back(data.begin(), data.end());
  end_ += data.size();
}

void QuicConn::write_gather(std::span<const std::span<const std::byte>> pieces) {
  std::size_t total = 0;
  for (const auto& p : pieces) {
    total += p.size();
  }
  if (total == 0) {
    return;
  }
  auto& c = chunks_.emplace_back();
  c.reserve(total);
  for (const auto& p : pieces) {
    c.insert(c.end(), p.begin(), p.end());
  }
  end_ += total;
}

void QuicConn::note_tx_path(const ngtcp2_path& p) {
  auto copy = [](QuicAddr& to, const ngtcp2_addr& a, const QuicAddr& dflt) {
    if (a.addrlen == 0 || a.addrlen > sizeof to.ss) {
      to = dflt;
      return;
    }
    std::memcpy(&to.ss, a.addr, a.addrlen);
    to.len = a.addrlen;
  };
  copy(tx_local_, p.local, local_);
  copy(tx_remote_, p.remote, remote_);
}

bool QuicConn::send_datagram(std::span<const std::byte> d) {
  if (d.size() > kQuicDgramMaxFrame) {
    return false;
  }
  dgram_out_.push_back(dgram_buffer(d));
  return true;
}

std::vector<std::byte> QuicConn::dgram_buffer(std::span<const std::byte> d) {
  std::vector<std::byte> b;
  if (!dgram_spare_.empty()) {
    b = std::move(dgram_spare_.back());
    dgram_spare_.pop_back();
  }
  b.assign(d.begin(), d.end());
  return b;
}

void QuicConn::recycle_datagram(std::vector<std::byte>&& b) {
  if (dgram_spare_.size() < kQuicDgramQueue && b.capacity() > 0) {
    dgram_spare_.push_back(std::move(b));
  }
}

std::uint64_t QuicConn::peer_max_datagram() const {
  const ngtcp2_transport_params* tp = ngtcp2_conn_get_remote_transport_params(conn_);
  return tp != nullptr ? tp->max_datagram_frame_size : 0;
}

std::size_t QuicConn::datagram_queue_limit() const {
  ngtcp2_conn_stat st{};
  ngtcp2_conn_get_conn_stat(conn_, &st);
  return std::clamp<std::size_t>(static_cast<std::size_t>(st.cwnd / (kQuicDgramMaxFrame + 50)),
                                 kQuicDgramQueueMin, kQuicDgramQueue);
}

QuicTime QuicConn::smoothed_rtt() const {
  ngtcp2_conn_stat st{};
  ngtcp2_conn_get_conn_stat(conn_, &st);
  return st.smoothed_rtt;
}

Status QuicConn::migrate(const QuicAddr& new_local, QuicTime now) {
  if (failed_) {
    return *failed_;
  }
  if (server_ || !confirmed_) {
    return make_error(std::errc::not_connected, "quic migrate: handshake not confirmed yet");
  }
  const ngtcp2_path path{addr_of(new_local), addr_of(remote_), nullptr};
  // Immediate migration: the server has validated our peer address already, so packets go out
  // from the new address at once; ngtcp2 validates the new path (PATH_CHALLENGE) meanwhile.
  const int rv = ngtcp2_conn_initiate_immediate_migration(conn_, &path, now);
  if (rv == NGTCP2_ERR_CONN_ID_BLOCKED) {
    // Each migration uses a fresh connection id; the peer issues the next one within a round
    // trip of the previous migration.
    return make_error(std::errc::resource_unavailable_try_again,
                      "quic migrate: no spare connection id from the peer yet (try again)");
  }
  if (rv != 0) {
    return make_error(std::errc::invalid_argument,
                      std::string("quic migrate: ") + ngtcp2_strerror(rv));
  }
  local_ = new_local;
  return {};
}

std::vector<std::byte> QuicConn::stateless_reset_for_test() const {
  std::vector<std::byte> out(64);
  std::uint8_t rnd[40];
  rand_bytes(rnd, sizeof rnd);
  const ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(
      reinterpret_cast<std::uint8_t*>(out.data()), out.size(), reset_token_, rnd, sizeof rnd);
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

}  // namespace rendr::detail
