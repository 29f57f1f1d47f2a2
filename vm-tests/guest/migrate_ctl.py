#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Coordination and the unmodified client of the vm-tests migration scenario (docs/vm-tests.md).

  migrate_ctl.py mkfile PATH --mib N           write the scenario's file (a seeded pattern, the
                                               same bytes in every guest); print its SHA-256
  migrate_ctl.py serve --port P --name NAME [--agent SOCK --rendrctl BIN] [--info S]
                                               a guest's control port: answers `ready` (with
                                               --info), runs `migrate TO` (rendrctl migrate
                                               against this host's agent, answers its report),
                                               ends on `done`
  migrate_ctl.py client --vip IP --port N --ctl gw=IP,a=IP,b=IP --plan a>b,b>a --mib N ...
                                               the peer: waits until every guest is ready,
                                               downloads http://VIP:N/file, asks the source
                                               host of each planned migration to run it while
                                               the body flows, checks SHA-256, the reports and
                                               the peer's RST/abort counters

The guests share no filesystem: they talk over their QEMU links, one line each way per TCP
connection (the client sends a line, the server answers a line and closes; the client reads to
EOF, so neither side ever closes with unread data, which would send a RST and spoil the peer's
counters). Every wait is bounded.
"""
import argparse
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import time

CTL_PORT = 7799


def block(i):
    return hashlib.sha256(i.to_bytes(8, "little")).digest() * 2048  # 64 KiB


def pattern_digest(mib):
    h = hashlib.sha256()
    for i in range(mib * 16):
        h.update(block(i))
    return h.hexdigest()


def log(msg):
    print(f"[{time.monotonic():9.3f}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# mkfile


def mkfile(a):
    h = hashlib.sha256()
    tmp = a.path + ".tmp"
    with open(tmp, "wb") as f:
        for i in range(a.mib * 16):
            b = block(i)
            h.update(b)
            f.write(b)
    os.rename(tmp, a.path)
    print(h.hexdigest())
    return 0


# ---------------------------------------------------------------------------------------------
# serve: a guest's control port


def read_line(conn, limit=4096):
    buf = b""
    while b"\n" not in buf and len(buf) < limit:
        b = conn.recv(256)
        if not b:
            break
        buf += b
    return buf.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def serve(a):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", a.port))
    ls.listen(8)
    deadline = time.monotonic() + a.timeout
    reports, done = [], False
    log(f"{a.name}: control port {a.port} open")
    while not done:
        left = deadline - time.monotonic()
        if left <= 0:
            log(f"{a.name}: no `done` within {a.timeout:.0f} s")
            break
        ls.settimeout(left)
        try:
            c, peer = ls.accept()
        except socket.timeout:
            continue
        with c:
            c.settimeout(30)
            try:
                cmd = read_line(c)
            except OSError as e:
                log(f"{a.name}: control connection from {peer[0]}: {e}")
                continue
            log(f"{a.name}: <- {cmd!r} from {peer[0]}")
            words = cmd.split()
            if not words:
                answer = "error empty command"
            elif words[0] == "ready":
                answer = f"ready {a.name} {a.info}".strip()
            elif words[0] == "done":
                answer, done = "bye", True
            elif words[0] == "migrate" and len(words) == 2 and a.agent:
                argv = [a.rendrctl, "migrate", "--service", "http", "--to", words[1], "--agent",
                        a.agent, "--json", "--timeout-ms", "60000"]
                t0 = time.monotonic()
                try:
                    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, timeout=120)
                    rc, out, err = r.returncode, r.stdout.strip(), r.stderr.strip()
                except subprocess.TimeoutExpired:
                    rc, out, err = -1, "", "rendrctl migrate did not return within 120 s"
                secs = time.monotonic() - t0
                log(f"{a.name}: {' '.join(argv)}: exit {rc} after {secs:.2f} s")
                if err:
                    log(f"{a.name}: rendrctl stderr: {err}")
                log(f"{a.name}: report: {out}")
                try:
                    report = json.loads(out) if out else {}
                except ValueError:
                    report = {"unparsed": out}
                reports.append({"to": words[1], "rc": rc, "report": report})
                answer = json.dumps({"rc": rc, "seconds": round(secs, 3), "report": report,
                                     "stderr": err[-500:]})
            else:
                answer = f"error unknown command {cmd!r}"
            try:
                c.sendall(answer.encode() + b"\n")
            except OSError as e:
                log(f"{a.name}: answer to {peer[0]} failed: {e}")
    ls.close()
    ok = done and all(r["rc"] == 0 for r in reports)
    print(json.dumps({"name": a.name, "done": done, "migrations": [
        {"to": r["to"], "rc": r["rc"], "result": r["report"].get("result")} for r in reports]}))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------
# client: the unmodified peer


def ctl_call(addr, line, timeout):
    """Sends |line| to a control port, returns its answer (read to EOF)."""
    s = socket.create_connection((addr, CTL_PORT), timeout=timeout)
    with s:
        s.settimeout(timeout)
        s.sendall(line.encode() + b"\n")
        buf = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            buf += b
    return buf.decode("utf-8", "replace").strip()


def counters():
    """Tcp and TcpExt counters of this guest (/proc/net/snmp and /proc/net/netstat)."""
    out = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        with open(path) as f:
            lines = f.read().splitlines()
        for head, vals in zip(lines[0::2], lines[1::2]):
            k, names = head.split(":", 1)
            _, values = vals.split(":", 1)
            if k in ("Tcp", "TcpExt"):
                for n, v in zip(names.split(), values.split()):
                    out[f"{k}.{n}"] = int(v)
    return out


# A RST or an abort seen or sent by the peer: any increase is a failure.
RST_COUNTERS = ["Tcp.EstabResets", "Tcp.OutRsts", "Tcp.AttemptFails", "TcpExt.TCPAbortOnData",
                "TcpExt.TCPAbortOnClose", "TcpExt.TCPAbortOnMemory", "TcpExt.TCPAbortOnTimeout",
                "TcpExt.TCPAbortOnLinger", "TcpExt.TCPAbortFailed"]
# Shown for the reader: what the migrations cost the peer's TCP.
INFO_COUNTERS = ["Tcp.RetransSegs", "TcpExt.TCPTimeouts", "TcpExt.TCPLossProbes",
                 "TcpExt.TCPSackRecovery", "TcpExt.PAWSEstab", "TcpExt.TCPDSACKRecv",
                 "TcpExt.TCPDSACKOldSent", "TcpExt.TCPOFOQueue", "TcpExt.TCPZeroWindowDrop",
                 "TcpExt.TCPRcvQDrop"]


class Checks:
    def __init__(self, path):
        self.path, self.items = path, []

    def add(self, ok, name, secs=0.0):
        self.items.append((ok, secs, name))
        log(("PASS " if ok else "FAIL ") + name)

    def write(self):
        with open(self.path, "w") as f:
            for ok, secs, name in self.items:
                f.write(f"{'PASS' if ok else 'FAIL'} {secs:.1f} {name}\n")

    def ok(self):
        return bool(self.items) and all(ok for ok, _, _ in self.items)


def client(a):
    checks = Checks(a.checks)
    ctl = dict(kv.split("=", 1) for kv in a.ctl.split(","))
    plan = [tuple(step.split(">", 1)) for step in a.plan.split(",") if step]
    t_start = time.monotonic()
    try:
        return client_run(a, checks, ctl, plan, t_start)
    finally:
        # Every guest waits for `done` (bounded by its own timeout): tell them all, also after
        # a failure, so the run ends now and each guest reports its logs.
        for name, addr in ctl.items():
            try:
                log(f"done -> {name}: {ctl_call(addr, 'done', 10)}")
            except OSError as e:
                log(f"done -> {name}: {e}")
        checks.write()


def step_answer(step):
    try:
        return json.loads(step["answer"]) if isinstance(step["answer"], str) else {}
    except ValueError:
        return {}


def step_committed(step):
    ans = step_answer(step)
    return ans.get("rc") == 0 and ans.get("report", {}).get("result") == "committed"


def client_run(a, checks, ctl, plan, t_start):
    expected = pattern_digest(a.mib)
    size = a.mib << 20
    log(f"expected body: {size} bytes, sha256 {expected}")

    # 1. Every guest ready (agents up, servers registered): retry until the deadline.
    t0 = time.monotonic()
    deadline = t0 + a.ready_timeout
    ready = {}
    for name, addr in ctl.items():
        while True:
            try:
                ready[name] = ctl_call(addr, "ready", 5)
                log(f"ready <- {name}: {ready[name]}")
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    log(f"{name} ({addr}) not ready after {a.ready_timeout} s: {e}")
                    break
                time.sleep(0.3)
    hosts = {n for step in plan for n in step}
    same = all(ready[n].split()[-1] == expected for n in hosts if n in ready)
    checks.add(len(ready) == len(ctl) and same,
               f"agents ready on {', '.join(ctl)}; hosts serve the same file "
               f"({len(ready)}/{len(ctl)} answered)", time.monotonic() - t0)
    if len(ready) != len(ctl):
        return 1

    # 2. The download, with the migrations asked for while the body flows.
    c0 = counters()
    t0 = time.monotonic()
    s = socket.create_connection((a.vip, a.port), timeout=10)
    s.setblocking(False)
    local = s.getsockname()
    log(f"connected {local[0]}:{local[1]} -> {a.vip}:{a.port}")
    s.sendall(f"GET /{a.file} HTTP/1.1\r\nHost: {a.vip}\r\nConnection: close\r\n\r\n".encode())
    header, body_len, got, h = b"", None, 0, hashlib.sha256()
    error = None
    steps = []  # one per plan step: {from, to, at, replied_at, answer}
    pending = None  # (socket, step) of the migration being run
    plan_stopped = False  # a migration failed: the connection may not be where the plan says
    last_rx = time.monotonic()
    eof = False
    while not eof or pending:
        now = time.monotonic()
        if now - t0 > a.timeout:
            error = f"download not finished after {a.timeout} s"
            break
        if not eof and now - last_rx > a.stall:
            error = f"no byte for {a.stall} s at offset {got}"
            break
        # Ask for the next migration once the previous one answered and the body is far enough.
        if (pending is None and not plan_stopped and len(steps) < len(plan) and
                body_len is not None and not eof):
            frac = a.first_at + len(steps) * a.step_gap
            if got >= frac * body_len:
                src, dst = plan[len(steps)]
                cs = socket.create_connection((ctl[src], CTL_PORT), timeout=10)
                cs.sendall(f"migrate {dst}\n".encode())
                cs.setblocking(False)
                step = {"from": src, "to": dst, "at": got, "t": now - t0, "answer": b""}
                steps.append(step)
                pending = (cs, step)
                log(f"migrate {src} -> {dst} asked at body offset {got} "
                    f"({100.0 * got / body_len:.1f}%)")
        rlist = [] if eof else [s]
        # While a migration runs, read slowly (the body keeps flowing through it, but does not
        # finish before it); otherwise as fast as the guests allow.
        if pending is not None and not eof and a.pending_rate > 0:
            elapsed = now - t0 - pending[1]["t"]
            allowed = pending[1]["at"] + a.pending_rate * (1 << 20) * elapsed + (64 << 10)
            if got > allowed:
                rlist = []
        if pending is not None:
            rlist.append(pending[0])
        r, _, _ = select.select(rlist, [], [], 0.05)
        if s in r:
            try:
                b = s.recv(1 << 16)
            except BlockingIOError:
                b = None
            except OSError as e:
                error = f"recv at offset {got}: {e}"
                break
            if b is not None:
                last_rx = time.monotonic()
                if not b:
                    eof = True
                    log(f"EOF after {got} body bytes")
                elif body_len is None:
                    header += b
                    if b"\r\n\r\n" in header:
                        head, rest = header.split(b"\r\n\r\n", 1)
                        lines = head.decode("latin-1").split("\r\n")
                        log(f"response: {lines[0]}")
                        for ln in lines[1:]:
                            k, _, v = ln.partition(":")
                            if k.strip().lower() == "content-length":
                                body_len = int(v.strip())
                        if not lines[0].startswith("HTTP/1.1 200") or body_len is None:
                            error = f"bad response header: {lines!r}"
                            break
                        h.update(rest)
                        got += len(rest)
                else:
                    h.update(b)
                    got += len(b)
        if pending is not None and pending[0] in r:
            cs, step = pending
            try:
                b = cs.recv(1 << 16)
            except BlockingIOError:
                b = None
            except OSError as e:
                error = f"control connection of migration {step['from']} -> {step['to']}: {e}"
                break
            if b == b"":
                cs.close()
                step["replied_at"] = got
                step["answer"] = step["answer"].decode("utf-8", "replace").strip()
                log(f"migrate {step['from']} -> {step['to']} answered at body offset {got}: "
                    f"{step['answer']}")
                pending = None
                if not step_committed(step):
                    plan_stopped = True
                    log("the migration did not commit: the rest of the plan is not asked")
            elif b:
                step["answer"] += b
    secs = time.monotonic() - t0
    s.close()
    c1 = counters()

    for k, step in enumerate(steps, 1):
        ans = step_answer(step)
        rep = ans.get("report", {})
        result = rep.get("result")
        mid = body_len is not None and "replied_at" in step and step["replied_at"] < body_len
        checks.add(ans.get("rc") == 0 and result == "committed" and mid,
                   f"migration {k}: {step['from']} -> {step['to']} {result or 'no report'} "
                   f"(asked at {100.0 * step['at'] / max(body_len or 1, 1):.0f}% of the body, "
                   f"answered at {100.0 * step.get('replied_at', 0) / max(body_len or 1, 1):.0f}%"
                   f"; frozen {rep.get('frozen_ms', '?')} ms, total {rep.get('total_ms', '?')} ms,"
                   f" {rep.get('bytes_carried', '?')} bytes carried)" +
                   ("" if result == "committed" else
                    f"; error: {(rep.get('error') or ans.get('stderr') or '?')[:200]}"),
                   ans.get("seconds", 0.0))
    for k in range(len(steps), len(plan)):
        checks.add(False, f"migration {k + 1}: {plan[k][0]} -> {plan[k][1]} never asked "
                          f"(the body ended first, or an earlier step failed)")
    digest = h.hexdigest()
    body_ok = error is None and body_len == size and got == size and digest == expected
    checks.add(body_ok, f"download through the VIP: {got} of {body_len} bytes in {secs:.1f} s, "
                        f"SHA-256 {'equal' if digest == expected else 'DIFFERS'}"
                        f"{'; ' + error if error else ''}", secs)
    delta = {k: c1.get(k, 0) - c0.get(k, 0) for k in RST_COUNTERS + INFO_COUNTERS}
    bad = {k: delta[k] for k in RST_COUNTERS if delta[k]}
    checks.add(not bad, "no RST or abort at the peer (" +
               (", ".join(f"{k} +{v}" for k, v in bad.items()) if bad else
                "Tcp EstabResets/OutRsts/AttemptFails, TcpExt TCPAbort* unchanged") + ")")
    print(json.dumps({"ok": checks.ok(), "size": size, "received": got, "body_len": body_len,
                      "sha256_expected": expected, "sha256_received": digest, "seconds":
                      round(secs, 2), "error": error, "counters": delta, "migrations": [
                          {k: v for k, v in st.items() if k != "answer"} |
                          {"answer": st["answer"] if isinstance(st["answer"], str) else ""}
                          for st in steps]}))
    return 0 if checks.ok() else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("mkfile")
    p.add_argument("path")
    p.add_argument("--mib", type=int, required=True)
    p = sub.add_parser("serve")
    p.add_argument("--port", type=int, default=CTL_PORT)
    p.add_argument("--name", required=True)
    p.add_argument("--agent", default="", help="this host's agent control socket")
    p.add_argument("--rendrctl", default="rendrctl")
    p.add_argument("--info", default="", help="appended to the `ready` answer")
    p.add_argument("--timeout", type=float, default=300)
    p = sub.add_parser("client")
    p.add_argument("--vip", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--file", default="file")
    p.add_argument("--mib", type=int, required=True)
    p.add_argument("--ctl", required=True, help="NAME=ADDR,... of every guest's control port")
    p.add_argument("--plan", required=True, help="FROM>TO,...: the migrations, in order")
    p.add_argument("--first-at", type=float, default=0.25,
                   help="fraction of the body after which the first migration is asked")
    p.add_argument("--step-gap", type=float, default=0.25,
                   help="and each next one this much later (once the previous one answered)")
    p.add_argument("--pending-rate", type=float, default=1.0,
                   help="MiB/s the client reads at while a migration runs (0: unlimited)")
    p.add_argument("--ready-timeout", type=float, default=120)
    p.add_argument("--stall", type=float, default=60, help="fail after this long without a byte")
    p.add_argument("--timeout", type=float, default=240)
    p.add_argument("--checks", required=True, help="file: one 'PASS|FAIL SECONDS NAME' a line")
    a = ap.parse_args()
    return {"mkfile": mkfile, "serve": serve, "client": client}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
