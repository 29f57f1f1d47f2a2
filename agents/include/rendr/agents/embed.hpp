// SPDX-License-Identifier: Apache-2.0
// The embedder API: how a server process hands its live TCP connections to rendr-agent for
// migration (export) and receives connections migrated to its host (adopt), each with an opaque
// application state (e.g. a file offset) that moves with the socket.
//
//   auto s = Session::connect("/run/rendr/agent.sock", "http");   // one per process+service
//   auto id = s->track(fd);            // after accept(): the agent can now migrate this conn
//   poll(s->fd(), POLLIN) ...          // then:
//   auto ev = s->poll_event();         // ExportRequest / Adopt / ExportDone / Returned
//
// Export: on ExportRequest stop using each listed connection at a message boundary, then call
// export_conn(id, fd, state) and close your fd (the agent holds a duplicate). The connection is
// either committed elsewhere (ExportDone: forget it) or handed back (Returned: keep serving
// with the returned fd and state). Adopt: a connection migrated here, with its state; it is
// already tracked under the given id. Closing a connection: untrack(id) first; a connection
// that closes while a migration asks for it is dropped from that migration (the rest of the
// batch moves). Not thread-safe; the socket is non-blocking.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace rendr::agents {

class Session {
 public:
  struct ExportRequest {
    std::uint64_t migration = 0;
    std::vector<std::uint64_t> conn_ids;
  };
  struct Adopt {
    std::uint64_t conn_id = 0;
    FourTuple tuple;
    UniqueFd fd;
    std::vector<std::byte> state;
  };
  struct ExportDone {
    std::uint64_t conn_id = 0;
  };
  struct Returned {
    std::uint64_t conn_id = 0;
    UniqueFd fd;
    std::vector<std::byte> state;
  };
  using Event = std::variant<ExportRequest, Adopt, ExportDone, Returned>;

  // connect registers this process as the server of |service| with the agent at |path|.
  [[nodiscard]] static Result<Session> connect(const std::string& path, std::string_view service);

  [[nodiscard]] int fd() const { return sock_.get(); }
  // track announces a connected TCP socket; the returned id names it in later events.
  [[nodiscard]] Result<std::uint64_t> track(int conn_fd);
  // untrack tells the agent the server closed |conn_id|; a migration waiting for its export
  // drops it from the batch instead of aborting.
  [[nodiscard]] Status untrack(std::uint64_t conn_id);
  // poll_event returns the next event if one is waiting (never blocks); ECONNRESET when the
  // agent went away.
  [[nodiscard]] Result<std::optional<Event>> poll_event();
  // export_conn hands |conn_fd| and |state| to the agent for an ExportRequest.
  [[nodiscard]] Status export_conn(std::uint64_t conn_id, int conn_fd,
                                   std::span<const std::byte> state);
  // refuse_export declines to export |conn_id|: the whole batch aborts, unless no process
  // holds the connection's socket any more (the agent checks when the server shares its
  // netns), then the connection counts as ended and only it leaves the batch.
  [[nodiscard]] Status refuse_export(std::uint64_t conn_id, std::string_view why);

 private:
  explicit Session(UniqueFd sock) : sock_(std::move(sock)) {}
  UniqueFd sock_;
  std::uint64_t next_id_ = 1;
};

}  // namespace rendr::agents
