// SPDX-License-Identifier: Apache-2.0
// The embedder API: how a server process hands its live TCP connections to rendr-agent for
// migration (export) and receives connections migrated to its host (adopt), each with an opaque
// application state (e.g. a file offset) that moves with the socket.
//
//   auto s = Session::connect("/run/rendr/agent.sock", "http");   // one per process+service
//   auto id = s->track(fd);            // after accept(): the agent can now migrate this conn
//   poll(s->fd(), POLLIN, s->timeout_ms()) ...   // then, after every poll() return:
//   auto ev = s->poll_event();         // ExportRequest / Adopt / ExportDone / Returned /
//                                      // AgentLost / AgentBack
//
// Export: on ExportRequest stop using each listed connection at a message boundary, then call
// export_conn(id, fd, state) and close your fd (the agent holds a duplicate). The connection is
// either committed elsewhere (ExportDone: forget it) or handed back (Returned: keep serving
// with the returned fd and state). An export_conn that fails leaves the connection with you:
// keep serving it. Adopt: a connection migrated here, with its state; it is already tracked
// under the given id. An Adopt with an EMPTY state is a new connection the agent accepted for
// the server (the userstack method: the fd is one end of a stream socketpair the agent bridges
// to its user-space TCP stack): serve it from its first byte, as one from your own listener.
// Closing a connection: untrack(id) first; a connection that closes while a migration asks for
// it is dropped from that migration (the rest of the batch moves).
//
// The agent going away (it exited or was killed: its control socket closed) changes nothing for
// the connections; the agent only ever acts on them during a migration. The session keeps a
// duplicate of every exported descriptor until the export is done or returned: if the agent
// goes away before it froze a connection (it is not in repair mode), the session hands the
// connection back at once (a Returned event after AgentLost), and the server serves on. A
// connection the agent had already frozen for the move (repair mode) only an agent can resume
// or finish: the session keeps it (AgentLost::exports_frozen) and hands it to the next agent
// that answers, which asks its peers where the move got to and answers ExportDone (it lives on
// another host) or Returned (thawed: serve it on). The session reports the loss
// once (AgentLost), fd() is -1 from then on, and each poll_event() called once timeout_ms() has
// elapsed makes one registration attempt at the same path: a connect() and a register message,
// whose answer arrives on fd() like any event. Attempts back off from 100 ms to every 2 s and go
// on until an agent answers; then the session tracks again, under the same ids, every connection
// it knows the server still holds (tracked or adopted, not exported, not untracked), hands it
// the frozen exports, and reports AgentBack. track/untrack while the agent is away only update that list. No thread, no timer:
// nothing happens between the embedder's calls. Not thread-safe; the socket is non-blocking.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace rendr::agents {

class Message;

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
  // The agent went away (|why|: e.g. "control socket closed by the other side"). Keep serving
  // every connection; |conns| is how many the session will track again once an agent is back.
  // Connections exported and not yet done or returned: those the agent had not frozen follow
  // as Returned events (|exports_returned|); those it had frozen are kept for the next agent
  // (|exports_frozen|); |exports_lost| counts exports whose duplicate was missing.
  struct AgentLost {
    std::string why;
    std::size_t conns = 0;
    std::size_t exports_returned = 0;
    std::size_t exports_lost = 0;
    std::size_t exports_frozen = 0;
  };
  // Registered again with the agent at the same path after |attempts| attempts; |conns|
  // connections were tracked again under their ids, and |reclaimed| frozen exports handed to
  // it (each answered later by ExportDone or Returned).
  struct AgentBack {
    std::size_t conns = 0;
    unsigned attempts = 0;
    std::size_t reclaimed = 0;
  };
  using Event = std::variant<ExportRequest, Adopt, ExportDone, Returned, AgentLost, AgentBack>;

  // connect registers this process as the server of |service| with the agent at |path| (blocks
  // up to 5 s for its answer; an error when no agent answers).
  [[nodiscard]] static Result<Session> connect(const std::string& path, std::string_view service);

  // fd is the control socket to poll for POLLIN; -1 while the agent is away (poll() skips it).
  [[nodiscard]] int fd() const { return sock_.get(); }
  // registered: an agent knows this session (false from the loss until AgentBack).
  [[nodiscard]] bool registered() const { return link_ == Link::registered; }
  // timeout_ms is the longest the embedder's poll() may wait before calling poll_event() again:
  // -1 (only when fd() is readable) while registered, else the time to the next registration
  // attempt (or to the loss report, 0).
  [[nodiscard]] int timeout_ms() const;
  // track announces a connected TCP socket; the returned id names it in later events. While
  // the agent is away it is only remembered (and tracked once an agent is back).
  [[nodiscard]] Result<std::uint64_t> track(int conn_fd);
  // untrack tells the agent the server closed |conn_id|; a migration waiting for its export
  // drops it from the batch instead of aborting.
  [[nodiscard]] Status untrack(std::uint64_t conn_id);
  // poll_event returns the next event if one is waiting (never waits for one: while the agent
  // is away a call makes at most one connect() and one send, and the call that reads the
  // answer sends the tracks). Errors are malformed messages only; the agent going away is the
  // AgentLost event.
  [[nodiscard]] Result<std::optional<Event>> poll_event();
  // export_conn hands |conn_fd| and |state| to the agent for an ExportRequest (the session
  // keeps a duplicate of the descriptor until ExportDone or Returned; the server closes its
  // own). On an error (e.g. the agent just went away) the connection stays the server's.
  [[nodiscard]] Status export_conn(std::uint64_t conn_id, int conn_fd,
                                   std::span<const std::byte> state);
  // refuse_export declines to export |conn_id|: the whole batch aborts, unless no process
  // holds the connection's socket any more (the agent checks when the server shares its
  // netns), then the connection counts as ended and only it leaves the batch.
  [[nodiscard]] Status refuse_export(std::uint64_t conn_id, std::string_view why);

 private:
  using Clock = std::chrono::steady_clock;
  enum class Link { registered, away, registering };

  Session(UniqueFd sock, std::string path, std::string service)
      : sock_(std::move(sock)), path_(std::move(path)), service_(std::move(service)) {}
  // send sends |m| (with |fd|) when registered; a send that finds the agent gone starts the
  // away state (reported by the next poll_event) and fails.
  Status send(const Message& m, int fd = -1);
  void lose(std::string why);
  void try_register();
  Result<std::optional<Event>> registration_answer();

  UniqueFd sock_;
  std::string path_;
  std::string service_;
  std::uint64_t next_id_ = 1;
  // Connections the server holds, by id (re-tracked after a loss) and those handed to the agent
  // by export_conn until ExportDone or Returned.
  struct Exported {
    FourTuple tuple;
    UniqueFd fd;  // our duplicate: the connection survives the agent
    std::vector<std::byte> state;
    bool frozen = false;  // the agent that froze it went away: reclaimed by the next one
  };
  std::map<std::uint64_t, FourTuple> held_;
  std::map<std::uint64_t, Exported> exported_;
  std::deque<Event> pending_;  // events the loss produced, reported after AgentLost
  Link link_ = Link::registered;
  std::optional<AgentLost> lost_;  // a loss not reported yet
  Clock::time_point next_try_{};     // away: next attempt; registering: answer deadline
  int backoff_ms_ = 0;
  unsigned attempts_ = 0;
};

}  // namespace rendr::agents
