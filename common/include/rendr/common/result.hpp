// SPDX-License-Identifier: Apache-2.0
// rendr::Result<T> — the project's error-or-value type (STYLE C2). A std::variant-backed
// "expected": either a T or an Error{std::error_code, context}. errno values and asio errors are
// both std::error_code, so callers and tests can match exact codes. No exceptions cross module
// APIs; Result<void> carries success or an Error. Not thread-safe beyond what T is.
#pragma once

#include <cerrno>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace rendr {

// Error: what went wrong (|code|) and where/why (|context|, outermost step first after
// with_context()). message() renders "context: code message" when the code is the cause (an
// errno from a syscall, an asio error), and just "context" when the code only classifies a
// refusal rendr itself decided (make_error(std::errc, ...)): "gateway gw has no backend 'b'",
// not "...: Protocol error". |reason| is a machine-readable value that qualifies |code| where
// the code's owner documents one (the engine: errc::flow_refused carries the peer's
// RefusalCode, engine::refusal_code reads it), so callers never parse |context|.
struct Error {
  std::error_code code;
  std::string context;
  bool code_text = true;
  std::optional<std::uint32_t> reason{};

  [[nodiscard]] std::string message() const {
    if (context.empty()) {
      return code.message();
    }
    if (!code_text) {
      return context;
    }
    return context + ": " + code.message();
  }
  // with_context prefixes |outer| ("restore 10.0.0.1:443: set send queue").
  [[nodiscard]] Error with_context(std::string_view outer) const {
    Error e = *this;
    e.context = context.empty() ? std::string(outer) : std::string(outer) + ": " + context;
    if (context.empty() && !code_text) {
      e.code_text = true;  // the bare code was the whole message so far
    }
    return e;
  }
};

// errno_error builds an Error from an errno value (defaults to the current errno); its text
// ends with the errno's text.
[[nodiscard]] inline Error errno_error(std::string context, int err = errno) {
  return Error{std::error_code(err, std::generic_category()), std::move(context)};
}
// make_error builds a refusal rendr decided: |code| classifies it for callers and tests,
// |context| is the whole message (the code's generic text is not appended).
[[nodiscard]] inline Error make_error(std::errc code, std::string context) {
  return Error{std::make_error_code(code), std::move(context), false};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  [[nodiscard]] bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  [[nodiscard]] const Error& error() const { return std::get<1>(v_); }
  [[nodiscard]] Error take_error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), failed_(true) {}  // NOLINT: implicit by design

  [[nodiscard]] bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  [[nodiscard]] const Error& error() const { return err_; }
  [[nodiscard]] Error take_error() && { return std::move(err_); }

 private:
  Error err_{};
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace rendr

// RENDR_TRY(expr): evaluate a Result-returning |expr|; on error return it (with no extra
// context) from the enclosing function, whose return type must be constructible from Error.
#define RENDR_TRY(expr)                          \
  do {                                           \
    auto rendr_try_r_ = (expr);                  \
    if (!rendr_try_r_.ok()) {                    \
      return std::move(rendr_try_r_).take_error(); \
    }                                            \
  } while (0)

// RENDR_TRY_CTX(expr, ctx): like RENDR_TRY but prefixes the error's context with |ctx|.
#define RENDR_TRY_CTX(expr, ctx)                                    \
  do {                                                              \
    auto rendr_try_r_ = (expr);                                     \
    if (!rendr_try_r_.ok()) {                                       \
      return std::move(rendr_try_r_).take_error().with_context(ctx); \
    }                                                               \
  } while (0)
