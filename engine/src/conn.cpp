// SPDX-License-Identifier: Apache-2.0
// Conn / PacketConn / Admin: thin forwarding onto the FlowDriver (driver.hpp).
#include <rendr/engine/conn.hpp>

#include "driver.hpp"

#include <rendr/engine/errors.hpp>

namespace rendr {

using engine::Clock;

Admin::Admin(std::shared_ptr<detail::FlowDriver> d) : d_(std::move(d)) {}
Admin::~Admin() = default;

Status Admin::migrate(PathId path) {
  std::unique_lock lk(d_->mu);
  auto r = d_->core().migrate(path, Clock::now());
  d_->request_service_locked();
  return r;
}

PathId Admin::active_path() const {
  std::unique_lock lk(d_->mu);
  return d_->core().active_path();
}

Result<PathId> Admin::add_path(const PathSpec& spec, Deadline deadline) {
  return d_->add_path(spec, deadline);
}

Status Admin::remove_path(PathId path) {
  std::unique_lock lk(d_->mu);
  d_->forget_path_locked(path);  // removed on purpose: no re-dial
  auto r = d_->core().remove_path(path, Clock::now());
  d_->request_service_locked();
  return r;
}

engine::FlowState Admin::state() const {
  std::unique_lock lk(d_->mu);
  return d_->core().state();
}

Mode Admin::mode() const {
  std::unique_lock lk(d_->mu);
  return d_->core().mode();
}

Status Admin::set_mode(Mode m) {
  std::unique_lock lk(d_->mu);
  auto r = d_->core().set_mode(m);
  d_->request_service_locked();
  return r;
}

std::size_t Admin::recv_queue_hwm() const { return stats().recv_queue_hwm; }
std::uint64_t Admin::recv_dups() const { return stats().recv_dups; }
std::uint64_t Admin::bond_stuck_skips() const { return stats().bond_stuck_skips; }
std::uint64_t Admin::migration_count() const { return stats().migration_count; }

std::uint64_t Admin::on_migrate(MigrateCallback cb) {
  return d_->add_migrate_callback(std::move(cb));
}

void Admin::cancel_on_migrate(std::uint64_t id) { d_->remove_migrate_callback(id); }

engine::FlowStats Admin::stats() const {
  std::unique_lock lk(d_->mu);
  return d_->stats_locked();
}

engine::Id128 Admin::flow_id() const {
  std::unique_lock lk(d_->mu);
  return d_->core().flow_id();
}

Status Admin::shutdown_write() {
  std::unique_lock lk(d_->mu);
  auto st = d_->core().shutdown_write(engine::Clock::now());
  d_->request_service_locked();
  return st;
}

std::optional<engine::L3Identity> Admin::l3_identity() const {
  std::unique_lock lk(d_->mu);
  return d_->core().l3_identity();
}

engine::Side Admin::side() const {
  std::unique_lock lk(d_->mu);
  return d_->core().side();
}

Status Admin::close() { return d_->close(); }

Status Admin::refuse(engine::RefusalCode code, std::string_view detail) {
  const engine::Refusal r{code, std::string(detail)};
  return d_->close(&r);
}

void Admin::async_close(std::function<void(Status)> done) {
  d_->close_async(nullptr, std::move(done));
}

void Admin::async_refuse(engine::RefusalCode code, std::string_view detail,
                         std::function<void(Status)> done) {
  const engine::Refusal r{code, std::string(detail)};
  d_->close_async(&r, std::move(done));
}

std::optional<engine::Refusal> Admin::peer_refusal() const {
  std::unique_lock lk(d_->mu);
  return d_->core().stats().peer_refusal;
}

void Admin::kill_path_for_test(PathId path) { d_->kill_path(path); }

Status Admin::rebind_path(PathId path, const std::string& local) {
  return d_->rebind_path(path, local);
}

Admin::executor_type Admin::get_executor() const { return d_->io().get_executor(); }

Conn::~Conn() { (void)close(); }

Result<std::size_t> Conn::read_some(std::span<std::byte> buf, Deadline deadline) {
  return d_->read_some(buf, deadline);
}

Result<std::size_t> Conn::read(std::span<std::byte> buf, Deadline deadline) {
  std::size_t got = 0;
  while (got < buf.size()) {
    auto r = d_->read_some(buf.subspan(got), deadline);
    if (!r) {
      return std::move(r).take_error();
    }
    if (*r == 0) {
      break;
    }
    got += *r;
  }
  return got;
}

Status Conn::write(std::span<const std::byte> data, Deadline deadline) {
  while (!data.empty()) {
    auto r = d_->write_some(data, deadline);
    if (!r) {
      return std::move(r).take_error();
    }
    data = data.subspan(*r);
  }
  return {};
}

Result<std::size_t> Conn::write_some(std::span<const std::byte> data, Deadline deadline) {
  return d_->write_some(data, deadline);
}

void Conn::start_read(std::span<std::byte> buf, IoHandler h) {
  d_->start_async_read(buf, std::move(h));
}

void Conn::start_write(std::span<const std::byte> buf, IoHandler h) {
  d_->start_async_write(buf, std::move(h));
}

void Conn::cancel() { d_->cancel_async(); }

PacketConn::~PacketConn() { (void)close(); }

Status PacketConn::write(std::span<const std::byte> packet, Deadline deadline) {
  return d_->write_packet(packet, deadline);
}

Result<bool> PacketConn::read(std::vector<std::byte>& out, Deadline deadline) {
  return d_->read_packet(out, deadline);
}

std::size_t PacketConn::max_packet() const {
  std::unique_lock lk(d_->mu);
  return d_->max_payload();
}

}  // namespace rendr
