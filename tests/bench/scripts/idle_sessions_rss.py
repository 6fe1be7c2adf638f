#!/usr/bin/env python3
"""Memory given back after many idle sessions close (issue 13 point 6).

Starts `relaybox serve` (IP-only, loopback ports, temporary data directory), opens N
idle implicit-TLS IMAP sessions (each reads the greeting, then waits), closes them all,
and prints the relay's VmRSS before, at the peak (all open) and at 1, 10 and 30 s after
they closed, as one JSON line (`--rounds`: that many times over, each round's figures
under "rounds").

    tests/bench/scripts/idle_sessions_rss.py [--bin target/debug/relaybox] [-n 10000]
        [--rounds 1] [--env NAME=VALUE ...] [--keep]

Both this script and the relay raise their open-file limit to the hard limit (10 000
sessions need more than the usual 1024). Every wait is bounded; the relay is killed at
the end.
"""

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def open_session(port, ctx, sessions, failures, limit):
    async with limit:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=ctx), 60)
            greeting = await asyncio.wait_for(r.readline(), 60)
            if not greeting.startswith(b"* OK"):
                failures.append(greeting[:60])
                w.close()
                return
            sessions.append(w)
        except Exception as e:  # noqa: BLE001 - counted and reported
            failures.append(repr(e)[:80])


async def run(args):
    raise_nofile()
    tmp = tempfile.mkdtemp(prefix="relaybox-rss-")
    ports = {k: free_port() for k in
             ["smtp", "submission", "submissions", "imap", "imaps", "https", "http"]}
    ini = "[params]\nmail_domain = 127.0.0.1\n"
    ini += f"data_dir = {tmp}/data\nturn_listen =\nmdns_name =\nmax_load_1m = 10000\nlog_stderr = true\n"
    ini += f"max_imap_connections = {max(args.n, 10000)}\n"
    for k, p in ports.items():
        ini += f"{k}_listen = 127.0.0.1:{p}\n"
    with open(f"{tmp}/chatmail.ini", "w") as f:
        f.write(ini)
    env = dict(os.environ)
    for kv in args.env:
        k, v = kv.split("=", 1)
        env[k] = v
    log = open(f"{tmp}/stderr.log", "w")
    relay = subprocess.Popen([args.bin, "serve", "--config", f"{tmp}/chatmail.ini"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                             preexec_fn=raise_nofile)
    out = {"n": args.n, "env": args.env, "bin": args.bin}
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", ports["http"]), 1).close()
                break
            except OSError:
                if time.time() > deadline or relay.poll() is not None:
                    raise SystemExit("relay did not start; see " + f"{tmp}/stderr.log")
                time.sleep(0.1)
        await asyncio.sleep(2)
        out["rss_before_kib"] = rss_kib(relay.pid)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        rounds = []
        for _ in range(args.rounds):
            r = {}
            sessions, failures = [], []
            limit = asyncio.Semaphore(200)
            t0 = time.time()
            await asyncio.gather(*[open_session(ports["imaps"], ctx, sessions, failures, limit)
                                   for _ in range(args.n)])
            r["open_s"] = round(time.time() - t0, 1)
            r["sessions"] = len(sessions)
            r["failures"] = len(failures)
            r["failure_examples"] = failures[:3]
            await asyncio.sleep(2)
            r["rss_peak_kib"] = rss_kib(relay.pid)
            for w in sessions:
                w.close()
            await asyncio.gather(*[asyncio.wait_for(w.wait_closed(), 10) for w in sessions],
                                 return_exceptions=True)
            closed = time.time()
            for after in (1, 10, 30):
                await asyncio.sleep(max(0, closed + after - time.time()))
                r[f"rss_after_{after}s_kib"] = rss_kib(relay.pid)
            rounds.append(r)
        out.update(rounds[0])
        if len(rounds) > 1:
            out["rounds"] = rounds
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(10)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
        log.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/relaybox")
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--rounds", type=int, default=1, help="open and close N sessions this often")
    ap.add_argument("--keep", action="store_true", help="keep the data directory and log")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
