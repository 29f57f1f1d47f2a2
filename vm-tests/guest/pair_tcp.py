#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Two-guest TCP check for vm-tests: plain sockets between two QEMU guests.

  pair_tcp.py serve PORT [--timeout S]        accept one connection, read to EOF, answer with
                                              the hex SHA-256 of what was read, close
  pair_tcp.py send HOST PORT --mib N          connect (retrying until --timeout), send N MiB of a
                                              seeded pattern, half-close, compare the answer

Prints one JSON line; exit 0 only when the digests match. Bounded by --timeout in every step.
"""
import argparse, hashlib, json, socket, sys, time


def pattern(i):
    return hashlib.sha256(i.to_bytes(8, "little")).digest() * 2048  # 64 KiB


def serve(a):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", a.port))
    ls.listen(1)
    ls.settimeout(a.timeout)
    c, peer = ls.accept()
    c.settimeout(a.timeout)
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        h.update(b)
        n += len(b)
    c.sendall(h.hexdigest().encode())
    c.close()
    print(json.dumps({"role": "serve", "peer": peer[0], "received": n, "sha256": h.hexdigest()}))
    return 0


def send(a):
    deadline = time.monotonic() + a.timeout
    while True:
        try:
            s = socket.create_connection((a.host, a.port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    s.settimeout(a.timeout)
    h, t0 = hashlib.sha256(), time.monotonic()
    for i in range(a.mib * 16):
        b = pattern(i)
        h.update(b)
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
    answer = b""
    while True:
        b = s.recv(256)
        if not b:
            break
        answer += b
    s.close()
    ok = answer.decode() == h.hexdigest()
    print(json.dumps({"role": "send", "sent": a.mib << 20, "sha256": h.hexdigest(),
                      "peer_sha256": answer.decode(), "match": ok,
                      "seconds": round(time.monotonic() - t0, 2)}))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("port", type=int)
    p.add_argument("--timeout", type=float, default=60)
    p = sub.add_parser("send")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--mib", type=int, default=8)
    p.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    return serve(a) if a.cmd == "serve" else send(a)


if __name__ == "__main__":
    sys.exit(main())
