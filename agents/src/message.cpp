// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/message.hpp>
#include <rendr/common/bytes.hpp>

#include <cstring>

namespace rendr::agents {

const char* to_string(MsgType t) {
  switch (t) {
    case MsgType::register_service: return "register_service";
    case MsgType::track: return "track";
    case MsgType::untrack: return "untrack";
    case MsgType::status: return "status";
    case MsgType::metrics: return "metrics";
    case MsgType::flows: return "flows";
    case MsgType::migrate: return "migrate";
    case MsgType::exported: return "exported";
    case MsgType::export_refused: return "export_refused";
    case MsgType::adopt_failed: return "adopt_failed";
    case MsgType::reclaim: return "reclaim";
    case MsgType::export_request: return "export_request";
    case MsgType::export_done: return "export_done";
    case MsgType::returned: return "returned";
    case MsgType::adopt: return "adopt";
    case MsgType::ok: return "ok";
    case MsgType::fail: return "fail";
    case MsgType::json: return "json";
    case MsgType::text: return "text";
    case MsgType::progress: return "progress";
    case MsgType::hello: return "hello";
    case MsgType::offer: return "offer";
    case MsgType::ready: return "ready";
    case MsgType::steer: return "steer";
    case MsgType::steered: return "steered";
    case MsgType::commit: return "commit";
    case MsgType::committed: return "committed";
    case MsgType::abort: return "abort";
    case MsgType::aborted: return "aborted";
    case MsgType::query: return "query";
    case MsgType::mig_state: return "mig_state";
    case MsgType::peer_fail: return "peer_fail";
    case MsgType::steer_check: return "steer_check";
    case MsgType::keeper_hello: return "keeper_hello";
    case MsgType::keeper_checkpoint: return "keeper_checkpoint";
    case MsgType::keeper_take_held: return "keeper_take_held";
    case MsgType::keeper_release: return "keeper_release";
    case MsgType::keeper_thaw: return "keeper_thaw";
    case MsgType::keeper_unfreeze: return "keeper_unfreeze";
    case MsgType::keeper_stage: return "keeper_stage";
    case MsgType::keeper_activate: return "keeper_activate";
    case MsgType::keeper_drop_staged: return "keeper_drop_staged";
    case MsgType::keeper_reset: return "keeper_reset";
    case MsgType::keeper_status: return "keeper_status";
    case MsgType::keeper_accepted: return "keeper_accepted";
    case MsgType::keeper_ended: return "keeper_ended";
  }
  return "unknown";
}

namespace {
std::span<const std::byte> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
}  // namespace

Message& Message::add(Tag tag, std::span<const std::byte> value) {
  fields_.push_back(Field{tag, std::vector<std::byte>(value.begin(), value.end())});
  return *this;
}
Message& Message::add(Tag tag, std::vector<std::byte>&& value) {
  fields_.push_back(Field{tag, std::move(value)});
  return *this;
}
Message& Message::add(Tag tag, std::string_view value) { return add(tag, as_bytes(value)); }
Message& Message::add_u64(Tag tag, std::uint64_t value) {
  std::vector<std::byte> b(8);
  for (int i = 0; i < 8; ++i) {
    b[static_cast<std::size_t>(i)] = static_cast<std::byte>(value >> (56 - 8 * i));
  }
  return add(tag, std::move(b));
}

const std::vector<std::byte>* Message::get(Tag tag) const {
  for (const auto& f : fields_) {
    if (f.tag == tag) {
      return &f.value;
    }
  }
  return nullptr;
}

std::vector<const std::vector<std::byte>*> Message::all(Tag tag) const {
  std::vector<const std::vector<std::byte>*> out;
  for (const auto& f : fields_) {
    if (f.tag == tag) {
      out.push_back(&f.value);
    }
  }
  return out;
}

namespace {
Error missing(Tag tag, MsgType t) {
  return make_error(std::errc::protocol_error, std::string(to_string(t)) + " message lacks field " +
                                                   std::to_string(static_cast<int>(tag)));
}
std::uint64_t be64(const std::vector<std::byte>& v) {
  std::uint64_t x = 0;
  for (std::byte b : v) {
    x = (x << 8) | static_cast<std::uint8_t>(b);
  }
  return x;
}
}  // namespace

Result<std::string> Message::str(Tag tag) const {
  const auto* v = get(tag);
  if (v == nullptr) {
    return missing(tag, type_);
  }
  return std::string(reinterpret_cast<const char*>(v->data()), v->size());
}

std::string Message::str_or(Tag tag, std::string_view dflt) const {
  const auto* v = get(tag);
  return v == nullptr ? std::string(dflt)
                      : std::string(reinterpret_cast<const char*>(v->data()), v->size());
}

Result<std::uint64_t> Message::u64(Tag tag) const {
  const auto* v = get(tag);
  if (v == nullptr) {
    return missing(tag, type_);
  }
  if (v->size() != 8) {
    return make_error(std::errc::protocol_error,
                      std::string(to_string(type_)) + " field " +
                          std::to_string(static_cast<int>(tag)) + " is not a u64");
  }
  return be64(*v);
}

std::vector<std::string> Message::strs(Tag tag) const {
  std::vector<std::string> out;
  for (const auto* v : all(tag)) {
    out.emplace_back(reinterpret_cast<const char*>(v->data()), v->size());
  }
  return out;
}

Result<std::vector<std::uint64_t>> Message::u64s(Tag tag) const {
  std::vector<std::uint64_t> out;
  for (const auto* v : all(tag)) {
    if (v->size() != 8) {
      return make_error(std::errc::protocol_error, std::string(to_string(type_)) + " field " +
                                                       std::to_string(static_cast<int>(tag)) +
                                                       " is not a u64");
    }
    out.push_back(be64(*v));
  }
  return out;
}

std::vector<std::byte> Message::encode() const {
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(type_));
  w.u32(static_cast<std::uint32_t>(fields_.size()));
  for (const auto& f : fields_) {
    w.u16(static_cast<std::uint16_t>(f.tag));
    w.u32(static_cast<std::uint32_t>(f.value.size()));
    w.bytes(f.value);
  }
  return w.take();
}

std::vector<std::byte> Message::encode_framed() const {
  auto body = encode();
  ByteWriter w;
  w.u32(static_cast<std::uint32_t>(body.size()));
  w.bytes(body);
  return w.take();
}

Result<Message> Message::decode(std::span<const std::byte> body) {
  auto bad = [](const std::string& why) {
    return make_error(std::errc::bad_message, "agent message: " + why);
  };
  if (body.size() > kMaxMessage) {
    return bad("too large (" + std::to_string(body.size()) + " bytes)");
  }
  ByteReader r(body);
  std::uint16_t type = 0;
  std::uint32_t count = 0;
  if (!r.u16(type) || !r.u32(count)) {
    return bad("truncated header (" + std::to_string(body.size()) + " bytes)");
  }
  Message m(static_cast<MsgType>(type));
  if (std::string_view(to_string(m.type_)) == "unknown") {
    return bad("unknown type " + std::to_string(type));
  }
  if (count > kMaxFields || static_cast<std::size_t>(count) * 6 > r.remaining()) {
    return bad("claims " + std::to_string(count) + " fields, more than fit");
  }
  m.fields_.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    std::uint16_t tag = 0;
    std::uint32_t len = 0;
    std::span<const std::byte> v;
    if (!r.u16(tag) || !r.u32(len)) {
      return bad("field " + std::to_string(i) + " of " + std::to_string(count) +
                 ": truncated field header");
    }
    if (!r.bytes(len, v)) {
      return bad("field " + std::to_string(i) + " (tag " + std::to_string(tag) + ") claims " +
                 std::to_string(len) + " bytes, fewer remain");
    }
    m.fields_.push_back(Field{static_cast<Tag>(tag), std::vector<std::byte>(v.begin(), v.end())});
  }
  if (r.remaining() != 0) {
    return bad(std::to_string(r.remaining()) + " trailing bytes after " + std::to_string(count) +
               " fields");
  }
  return m;
}

Message ok_msg(std::string_view text) {
  Message m(MsgType::ok);
  if (!text.empty()) {
    m.add(Tag::text, text);
  }
  return m;
}

Message fail_msg(const Error& e) {
  Message m(MsgType::fail);
  m.add(Tag::text, e.message());
  m.add_u64(Tag::code, static_cast<std::uint64_t>(e.code.value()));
  return m;
}

Message fail_msg(std::string_view text) { return Message(MsgType::fail).add(Tag::text, text); }

Error error_of(const Message& m, std::string_view what) {
  if (m.type() == MsgType::fail || m.type() == MsgType::peer_fail) {
    auto code = m.u64(Tag::code);
    std::error_code ec = code ? std::error_code(static_cast<int>(*code), std::generic_category())
                              : std::make_error_code(std::errc::protocol_error);
    // The text is the peer's whole message (with its errno text where that was the cause).
    return Error{ec, std::string(what) + ": " + m.str_or(Tag::text, "(no reason given)"), false};
  }
  return make_error(std::errc::protocol_error,
                    std::string(what) + ": unexpected reply " + to_string(m.type()));
}

void FrameReader::feed(std::span<const std::byte> data) {
  if (off_ > 0 && off_ == buf_.size()) {
    buf_.clear();
    off_ = 0;
  } else if (off_ > (1U << 20) && off_ * 2 > buf_.size()) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(off_));
    off_ = 0;
  }
  buf_.insert(buf_.end(), data.begin(), data.end());
}

std::size_t FrameReader::need() const {
  std::span<const std::byte> avail(buf_.data() + off_, buf_.size() - off_);
  if (avail.size() < 4) {
    return 4 - avail.size();
  }
  ByteReader r(avail);
  std::uint32_t len = 0;
  (void)r.u32(len);
  const std::size_t total = 4 + std::min<std::size_t>(len, max_);
  return avail.size() >= total ? 0 : total - avail.size();
}

Result<std::optional<Message>> FrameReader::next() {
  std::span<const std::byte> avail(buf_.data() + off_, buf_.size() - off_);
  if (avail.size() < 4) {
    return std::optional<Message>{};
  }
  ByteReader r(avail);
  std::uint32_t len = 0;
  (void)r.u32(len);
  if (len > max_) {
    return make_error(std::errc::message_size, "agent frame of " + std::to_string(len) +
                                                   " bytes exceeds the limit of " +
                                                   std::to_string(max_) + " bytes");
  }
  if (avail.size() < 4 + static_cast<std::size_t>(len)) {
    return std::optional<Message>{};
  }
  auto m = Message::decode(avail.subspan(4, len));
  off_ += 4 + static_cast<std::size_t>(len);
  if (!m) {
    return std::move(m).take_error();
  }
  return std::optional<Message>(std::move(*m));
}

}  // namespace rendr::agents
