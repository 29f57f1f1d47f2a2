#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""An unmodified TCP peer for rendr's tests: plain Python sockets, knows nothing of rendr.

Connects to HOST PORT, sends --send bytes of the test pattern (see tests/support/pattern.hpp)
while receiving --recv bytes, verifies what it receives against the pattern, then closes and
prints one JSON line: sent, received, recv_sha256, recv_pattern_ok, first_mismatch, error.
Bounded: every socket operation times out after --timeout seconds.
"""
import argparse, hashlib, json, socket, struct, sys, threading, time

CHUNK = 64 * 1024


def base_block(seed):
    return b"".join(hashlib.sha256(struct.pack(">II", seed, i)).digest() for i in range(CHUNK // 32))


def chunk(base, j):
    return struct.pack("<Q", j) + base[8:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--send", type=int, default=0)
    ap.add_argument("--recv", type=int, default=0)
    ap.add_argument("--seed-send", type=int, default=1)
    ap.add_argument("--seed-recv", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--nodelay", action="store_true")
    a = ap.parse_args()

    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    if a.nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    res = {"sent": 0, "received": 0, "recv_pattern_ok": True, "first_mismatch": -1, "error": ""}
    t0 = time.monotonic()
    try:
        s.connect((a.host, a.port))
    except OSError as e:
        res["error"] = "connect: %s" % e
        print(json.dumps(res))
        return 1
    send_base = base_block(a.seed_send)
    recv_base = base_block(a.seed_recv)
    errors = []

    def sender():
        try:
            j = 0
            while res["sent"] < a.send:
                c = chunk(send_base, j)[: a.send - res["sent"]]
                s.sendall(c)
                res["sent"] += len(c)
                j += 1
        except OSError as e:
            errors.append("send: %s" % e)

    th = threading.Thread(target=sender)
    th.start()
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    try:
        while res["received"] < a.recv:
            n = s.recv_into(view, min(len(buf), a.recv - res["received"]))
            if n == 0:
                errors.append("recv: EOF after %d bytes" % res["received"])
                break
            data = view[:n]
            h.update(data)
            off = res["received"]
            if res["recv_pattern_ok"]:
                pos = 0
                while pos < n:
                    j, inb = divmod(off + pos, CHUNK)
                    m = min(CHUNK - inb, n - pos)
                    want = chunk(recv_base, j)[inb : inb + m]
                    if data[pos : pos + m] != want:
                        res["recv_pattern_ok"] = False
                        got = bytes(data[pos : pos + m])
                        k = next(i for i in range(m) if got[i] != want[i])
                        res["first_mismatch"] = off + pos + k
                        break
                    pos += m
            res["received"] += n
    except OSError as e:
        errors.append("recv: %s" % e)
    th.join(a.timeout)
    # Wait for the server's close so the connection ends cleanly on both sides.
    try:
        s.shutdown(socket.SHUT_WR)
        extra = s.recv(1)
        if extra:
            errors.append("unexpected extra bytes after %d" % res["received"])
    except OSError as e:
        errors.append("close: %s" % e)
    s.close()
    res["recv_sha256"] = h.hexdigest()
    res["error"] = "; ".join(errors)
    res["duration_s"] = round(time.monotonic() - t0, 3)
    print(json.dumps(res), flush=True)
    return 0 if not errors and res["recv_pattern_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
