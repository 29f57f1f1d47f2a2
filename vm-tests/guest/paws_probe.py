#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PAWS probe for the vm-tests finding (docs/vm-tests.md, "Findings on 6.1"): the repair stream
test's topology without any migration. Builds network namespaces peer -- gw -- a joined by veth
pairs (gw forwards), streams --mib MiB each way between a plain server in `a` and a plain client
in `peer`, and prints the peer's TcpExt PAWSEstab and reordering counters before and after, with
the CPU each namespace's traffic was handled on. Run it in a guest:

  vm-tests/rendr-vm exec --manifest BUILD/vm-tests/manifest.json [--smp 1] -- \
      python3 /rendr/paws_probe.py --mib 256

No rendr code runs here: a PAWSEstab rise is the kernel and the emulator alone.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

NS = ["pp-peer", "pp-gw", "pp-a"]


def sh(cmd):
    r = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stdout}")
    return r.stdout


def setup():
    for n in NS:
        subprocess.run(f"ip netns del {n}", shell=True, stderr=subprocess.DEVNULL)
        sh(f"ip netns add {n} && ip -n {n} link set lo up")
    sh("ip -n pp-peer link add eth0 type veth peer name vpeer netns pp-gw")
    sh("ip -n pp-a link add eth0 type veth peer name va netns pp-gw")
    for n, dev, addr in (("pp-peer", "eth0", "10.88.1.2/24"), ("pp-gw", "vpeer", "10.88.1.1/24"),
                         ("pp-gw", "va", "10.88.2.1/24"), ("pp-a", "eth0", "10.88.2.2/24")):
        sh(f"ip -n {n} link set {dev} up && ip -n {n} addr add {addr} dev {dev}")
    sh("ip netns exec pp-gw sysctl -qw net.ipv4.ip_forward=1")
    sh("ip -n pp-peer route add default via 10.88.1.1 && ip -n pp-a route add default via "
       "10.88.2.1")


def counters(ns):
    out = sh(f"ip netns exec {ns} cat /proc/net/netstat /proc/net/snmp").splitlines()
    c = {}
    for head, vals in zip(out[0::2], out[1::2]):
        k, names = head.split(":", 1)
        for n, v in zip(names.split(), vals.split(":", 1)[1].split()):
            c[f"{k}.{n}"] = int(v)
    return c


KEYS = ["TcpExt.PAWSEstab", "TcpExt.TCPOFOQueue", "TcpExt.TCPSACKReorder", "TcpExt.TCPTSReorder",
        "TcpExt.TCPDSACKRecv", "TcpExt.TCPDSACKOldSent", "Tcp.RetransSegs", "Tcp.EstabResets",
        "Tcp.OutRsts", "TcpExt.TCPLossProbes", "TcpExt.TCPTimeouts"]


def bulk(sock, nbytes, timeout):
    """Sends and receives |nbytes| each way on |sock| (a thread sends)."""
    sock.settimeout(timeout)
    buf = os.urandom(1 << 16)
    err = []

    def sender():
        try:
            left = nbytes
            while left > 0:
                left -= sock.send(buf[:min(len(buf), left)])
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(str(e))

    t = threading.Thread(target=sender)
    t.start()
    got = 0
    while True:
        b = sock.recv(1 << 16)
        if not b:
            break
        got += len(b)
    t.join()
    return got, err


def serve(port, nbytes, timeout):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    ls.settimeout(timeout)
    c, _ = ls.accept()
    got, err = bulk(c, nbytes, timeout)
    c.close()
    print(json.dumps({"server_received": got, "errors": err}))
    return 0 if got == nbytes and not err else 1


def client(host, port, nbytes, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = socket.create_connection((host, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    got, err = bulk(s, nbytes, timeout)
    s.close()
    print(json.dumps({"client_received": got, "errors": err}))
    return 0 if got == nbytes and not err else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--role", choices=["probe", "serve", "client"], default="probe")
    a = ap.parse_args()
    n = a.mib << 20
    if a.role == "serve":
        return serve(7301, n, a.timeout)
    if a.role == "client":
        return client("10.88.2.2", 7301, n, a.timeout)
    setup()
    me = os.path.abspath(__file__)
    total = {}
    rc = 0
    for run in range(a.runs):
        c0 = counters("pp-peer")
        t0 = time.monotonic()
        srv = subprocess.Popen(["ip", "netns", "exec", "pp-a", sys.executable, me, "--role",
                                "serve", "--mib", str(a.mib), "--timeout", str(a.timeout)],
                               stdout=subprocess.PIPE, text=True)
        cli = subprocess.run(["ip", "netns", "exec", "pp-peer", sys.executable, me, "--role",
                              "client", "--mib", str(a.mib), "--timeout", str(a.timeout)],
                             stdout=subprocess.PIPE, text=True)
        out, _ = srv.communicate(timeout=a.timeout)
        c1 = counters("pp-peer")
        d = {k: c1.get(k, 0) - c0.get(k, 0) for k in KEYS}
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
        ok = cli.returncode == 0 and srv.returncode == 0
        rc |= 0 if ok else 1
        print(json.dumps({"run": run + 1, "mib_each_way": a.mib, "ok": ok,
                          "seconds": round(time.monotonic() - t0, 1), "peer": d,
                          "client": cli.stdout.strip(), "server": out.strip()}), flush=True)
    print(json.dumps({"runs": a.runs, "cpus": os.cpu_count(), "peer_total": total}))
    for n_ in NS:
        subprocess.run(f"ip netns del {n_}", shell=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
