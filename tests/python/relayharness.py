"""Harness for the real-client tests: start the real `relaybox` binary on loopback ports
with a temporary chatmail.ini, and drive Delta Chat core (deltachat-rpc-server) against it
with bounded waits.

Used by conftest.py (fixtures) and the test modules (helpers). Nothing here mocks the
relay or the client: the relay is the binary built by `cargo build -p relaybox`, the
client is chatmail core 2.65.0 over JSON-RPC (spec/client.md §8).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import ssl
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from queue import Empty
from typing import Callable, NoReturn, Optional

import pytest
from deltachat_rpc_client import Account, AttrDict, EventType, Message

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "tests" / "out" / "python"

# The services and their chatmail.ini listen keys (Relaybox's own keys, README).
LISTEN_KEYS = (
    "smtp",
    "submission",
    "submissions",
    "imap",
    "imaps",
    "https",
    "http",
)

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

# `relaybox dev` ports (README).
DEV_PORTS = {
    "smtp": 2525,
    "submission": 1587,
    "submissions": 1465,
    "imap": 1143,
    "imaps": 1993,
    "https": 1443,
    "http": 1080,
}

# How long the relay may take to bind all its ports after start.
START_TIMEOUT = 30.0
# How long the relay may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


def relay_binary() -> Path:
    """The relay binary: $RELAYBOX_BIN or <repo>/target/debug/relaybox."""
    env = os.environ.get("RELAYBOX_BIN")
    return Path(env) if env else REPO / "target" / "debug" / "relaybox"


def rpc_server_binary() -> str:
    """deltachat-rpc-server from the venv that runs pytest (tests/run installs it)."""
    candidate = Path(sys.prefix) / "bin" / "deltachat-rpc-server"
    if candidate.exists():
        return str(candidate)
    return "deltachat-rpc-server"


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cannot_run(reason: str) -> NoReturn:
    """A test that cannot run here: skipped on a developer's machine, failed under CI
    (`CI=true`, as CI sets it), where every test must run and a skip would hide that one
    did not."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def random_localpart(n: int = 9) -> str:
    """A local part as core makes them for chatmail: `n` chars of [a-z0-9]."""
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def random_password(n: int = 16) -> str:
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


def insecure_tls() -> ssl.SSLContext:
    """TLS client context without certificate checks (the relay is self-signed, IP-only)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# Relays running now, so a failing test can show their logs (conftest.py).
ACTIVE_RELAYS: list["RelayProcess"] = []


@contextlib.contextmanager
def running(proc: "RelayProcess"):
    """Start `proc`, keep it in ACTIVE_RELAYS while in use, stop it (checked) after:
    the body of every relay fixture."""
    proc.start()
    ACTIVE_RELAYS.append(proc)
    try:
        yield proc
    finally:
        ACTIVE_RELAYS.remove(proc)
        proc.stop(check=True)


class RelayCrashed(Exception):
    pass


class RelayProcess:
    """One running `relaybox serve --config <dir>/chatmail.ini` on free loopback ports."""

    def __init__(
        self, workdir: Path, name: str, params: Optional[dict] = None, dev: bool = False
    ):
        """`dev`: run `relaybox dev --data-dir <dir>` (fixed ports DEV_PORTS, no
        config file) instead of `relaybox serve --config <dir>/chatmail.ini`."""
        self.workdir = workdir
        self.name = name
        self.dev = dev
        self.data_dir = workdir / "data"
        self.config_path = workdir / "chatmail.ini"
        self.log_path = workdir / "relay.log"
        if dev:
            self.ports = dict(DEV_PORTS)
        else:
            self.ports = dict(zip(LISTEN_KEYS, free_ports(len(LISTEN_KEYS))))
        self.params = {
            "mail_domain": "127.0.0.1",
            "data_dir": str(self.data_dir),
            **{f"{k}_listen": f"127.0.0.1:{p}" for k, p in self.ports.items()},
            # ACC-5.6 refuses account creation above these; a busy 2-core test machine
            # (load > 5 while cargo builds) or a nearly full disk must not fail these tests.
            "max_load_1m": 1000,
            "min_available_memory": 1,
            "min_free_disk_space": 1,
            # LOG-1 keeps logs in memory by default; the tests read relay.log. No TURN
            # port shared between relays running at once.
            "log_stderr": "true",
            "turn_listen": "",
            # Issue 13: every test client comes from loopback.
            "max_connections_per_ip": 100000,
            "max_connection_rate_per_ip": 100000,
            "max_connection_burst_per_ip": 100000,
            **(params or {}),
        }
        self.proc: Optional[subprocess.Popen] = None
        self._log_file = None

    # -- lifecycle -------------------------------------------------------------------

    def write_config(self) -> None:
        lines = ["# written by tests/python/relayharness.py", "[params]"]
        lines += [f"{k} = {v}" for k, v in self.params.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, write_config: bool = True) -> None:
        """Start the relay; without `write_config`, with the chatmail.ini already at
        `config_path` (e.g. the one `relaybox restore` brought back). The log is appended
        to, so a relay started again keeps the earlier run's lines."""
        binary = relay_binary()
        if not binary.exists():
            raise RuntimeError(f"{binary} does not exist: run `cargo build -p relaybox` first")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.dev:
            argv = [str(binary), "dev", "--data-dir", str(self.data_dir)]
        else:
            if write_config:
                self.write_config()
            argv = [str(binary), "serve", "--config", str(self.config_path)]
        env = dict(os.environ)
        env.setdefault("RELAYBOX_LOG", "info")
        env["NO_COLOR"] = "1"  # plain log file (tracing-subscriber honours NO_COLOR)
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT
        pending = dict(self.ports)
        while pending:
            if self.proc.poll() is not None:
                raise RelayCrashed(
                    f"relay exited with status {self.proc.returncode} during start-up\n"
                    + self.log_tail()
                )
            for key, port in list(pending.items()):
                if port_accepts(port):
                    del pending[key]
            if not pending:
                break
            if time.monotonic() > deadline:
                self.stop(check=False)
                raise RuntimeError(
                    f"relay did not accept on {sorted(pending)} within {START_TIMEOUT:.0f} s\n"
                    + self.log_tail()
                )
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, check: bool = True) -> None:
        """Stop the relay with SIGTERM. With `check`, raise RelayCrashed if it had died on
        its own, did not exit 0 within STOP_TIMEOUT, or a task panicked (tokio keeps the
        process alive after a panic in a session task; the log shows it)."""
        if self.proc is None:
            return
        crashed = self.proc.poll() is not None
        status = self.proc.returncode
        hung = False
        if not crashed:
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                hung = True
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.save_log()
        self.proc = None
        if not check:
            return
        if crashed:
            raise RelayCrashed(f"relay died during the tests (status {status})\n" + self.log_tail())
        if hung:
            raise RelayCrashed(f"relay did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM")
        if status != 0:
            raise RelayCrashed(f"relay exited with status {status} on SIGTERM\n" + self.log_tail())
        panics = [line for line in self.log_text().splitlines() if "panicked at" in line]
        if panics:
            raise RelayCrashed("relay log shows a panic:\n  " + "\n  ".join(panics[:5]))

    def kill(self) -> None:
        """SIGKILL the relay (the machine dies: nothing is flushed or closed); a later
        `stop` does nothing, `start` runs it again."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.save_log()
        self.proc = None

    def save_log(self) -> Optional[Path]:
        """Copy the relay log to tests/out/python/<name>-relay.log for CI artefacts."""
        try:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            dest = OUT_DIR / f"{self.name}-relay.log"
            dest.write_bytes(self.log_path.read_bytes())
            return dest
        except OSError:
            return None

    def log_text(self) -> str:
        try:
            return ANSI_ESCAPE.sub("", self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no relay log: {e})"
        tail = ANSI_ESCAPE.sub("", text).splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    # -- accounts --------------------------------------------------------------------

    def new_address(self) -> str:
        return f"{random_localpart()}@[127.0.0.1]"

    def dclogin_url(self, addr: str, password: str, starttls: bool = False) -> str:
        """The dclogin: link of spec/client.md §2 with this relay's implicit-TLS ports
        (993/465 equivalents), or with `starttls` its STARTTLS ports (143/587)."""
        p = urllib.parse.quote(password, safe="")
        if starttls:
            imap, smtp, sec = self.ports["imap"], self.ports["submission"], "starttls"
        else:
            imap, smtp, sec = self.ports["imaps"], self.ports["submissions"], "ssl"
        return (
            f"dclogin:{addr}?p={p}&v=1"
            f"&ih=127.0.0.1&ip={imap}&is={sec}"
            f"&sh=127.0.0.1&sp={smtp}&ss={sec}&ic=3"
        )

    def post_new(self, path: str = "/new", timeout: float = 10.0):
        """POST https://127.0.0.1:<https>/new; returns (status, headers, body bytes)."""
        url = f"https://127.0.0.1:{self.ports['https']}{path}"
        req = urllib.request.Request(url, data=b"", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=insecure_tls()) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


def parse_json(body: bytes) -> dict:
    return json.loads(body.decode("utf-8"))


# -- bounded calls and event waits -----------------------------------------------------


def call_with_timeout(fn: Callable, timeout: float, what: str):
    """Run a blocking call (e.g. a JSON-RPC future) in a thread and give up after
    `timeout` seconds: the RPC client itself waits forever."""
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            result["error"] = e

    t = threading.Thread(target=run, daemon=True, name=f"bounded:{what}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"{what}: no result within {timeout:.0f} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


class Events:
    """The event stream of one account, read with bounded waits. Keeps the recent
    warnings/errors so a timeout says what core saw."""

    def __init__(self, account: Account):
        self.account = account
        self.queue = account._rpc.get_queue(account.id)
        self.recent: list[str] = []

    def _note(self, ev: AttrDict) -> None:
        if ev.kind in (EventType.WARNING, EventType.ERROR, EventType.MSG_FAILED):
            self.recent.append(f"{ev.kind}: {ev.get('msg', ev.get('msg_id', ''))}")
            del self.recent[:-30]

    def next(self, timeout: float) -> Optional[AttrDict]:
        try:
            ev = AttrDict(self.queue.get(timeout=max(timeout, 0.001)))
        except Empty:
            return None
        self._note(ev)
        return ev

    def wait(self, kind: str, timeout: float, pred: Optional[Callable] = None, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"account {self.account.id}: no {kind} event{(' (' + what + ')') if what else ''}"
                    f" within {timeout:.0f} s; recent core warnings/errors:\n  "
                    + "\n  ".join(self.recent[-15:] or ["(none)"])
                )
            ev = self.next(remaining)
            if ev is not None and ev.kind == kind and (pred is None or pred(ev)):
                return ev

    def drain(self) -> None:
        while self.next(0.001) is not None:
            pass

    def wait_incoming(
        self, timeout: float, text: Optional[str] = None, prefix: Optional[str] = None
    ) -> Message:
        """Wait for an IncomingMsg (with this exact text, or text starting with `prefix`,
        if given) and return it."""
        acc = self.account

        def matches(ev):
            if text is None and prefix is None:
                return True
            got = acc.get_message_by_id(ev.msg_id).get_snapshot().text
            return got == text if text is not None else got.startswith(prefix)

        what = repr(text) if text is not None else (f"{prefix!r}..." if prefix else "")
        ev = self.wait(EventType.INCOMING_MSG, timeout, matches, what=what)
        return acc.get_message_by_id(ev.msg_id)


class Client:
    """A configured, online Delta Chat account plus its event stream."""

    def __init__(self, account: Account, addr: str, password: str):
        self.account = account
        self.addr = addr
        self.password = password
        self.events = Events(account)

    def __repr__(self) -> str:
        return f"Client({self.addr})"


def online_client(dc, qr: str, addr: str, password: str, timeout: float = 60.0) -> Client:
    """Add an account from `qr` (blocks until configured), start I/O and wait until IDLE."""
    acc = dc.add_account()
    client = Client(acc, addr, password)
    try:
        fut = acc._rpc.add_transport_from_qr.future(acc.id, qr)
        call_with_timeout(fut, timeout, f"configure {addr} from QR")
        assert acc.is_configured(), f"{addr}: not configured after add_transport_from_qr"
        call_with_timeout(acc.bring_online, timeout, f"bring {addr} online")
    except Exception as e:
        # Say what core saw while configuring (its Warning/Error events).
        client.events.drain()
        seen = "\n  ".join(client.events.recent[-15:] or ["(none)"])
        raise AssertionError(
            f"account {addr} from {qr!r} did not come online: {e}\n"
            f"core warnings/errors:\n  {seen}"
        ) from e
    client.events.drain()
    return client


def dclogin_client(dc, relay: RelayProcess) -> Client:
    addr, password = relay.new_address(), random_password()
    return online_client(dc, relay.dclogin_url(addr, password), addr, password)


def accepted_chat(sender: Client, receiver: Client):
    """The 1:1 chat sender→receiver, accepted on the receiver's side first (client.md §8,
    gotcha 1), so every message raises IncomingMsg."""
    receiver.account.create_chat(sender.account)
    return sender.account.create_chat(receiver.account)


def wait_downloaded(client: Client, msg: Message, timeout: float) -> AttrDict:
    """Wait until a received message is fully downloaded and return its snapshot.

    Core 2.65 sends a large attachment as a small pre-message (IncomingMsg, download
    state `Available`, text `<text> [<name> – <size>]`) followed by the full message that
    core downloads on its own; ask for it explicitly only if that does not happen."""
    start = time.monotonic()
    deadline = start + timeout
    requested = False
    while True:
        snap = msg.get_snapshot()
        state = snap.get("download_state")
        if state == "Done" and snap.file:
            return snap
        if state == "Available" and not requested and time.monotonic() - start > 20:
            client.account._rpc.download_full_message(client.account.id, msg.id)
            requested = True
        if state in ("Failure", "Undecipherable"):
            raise AssertionError(f"message {msg.id}: download state {state}: {snap}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"message {msg.id} not downloaded within {timeout:.0f} s: {snap}")
        time.sleep(0.2)
