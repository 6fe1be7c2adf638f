"""Protocol checks against a Relaybox running inside QEMU (tests/image/run).

Reaches the relay only through QEMU's forwarded ports on 127.0.0.1 (guest port + offset).

  relay_checks.py before OFFSET STATE_DIR   raw IMAPS account + APPEND, then (if the
                                            Delta Chat client is importable) a 1:1 chat
  relay_checks.py after OFFSET STATE_DIR    after a reboot: the account still exists (a
                                            wrong password is refused), the appended
                                            message is still there, and the 1:1 chat
                                            still works with the same client accounts

Prints one `CHECK <name> ok|FAIL|SKIP <detail>` line per check; exits 1 if any failed.
"""

from __future__ import annotations

import imaplib
import json
import os
import random
import ssl
import string
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "python"))

FAILED = 0


def report(name: str, ok: bool | None, detail: str = "") -> None:
    global FAILED
    status = "SKIP" if ok is None else ("ok" if ok else "FAIL")
    if ok is False:
        FAILED += 1
    print(f"CHECK {name} {status} {detail}".rstrip(), flush=True)


def tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def imap(offset: int) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", offset + 993, ssl_context=tls(), timeout=30)


def localpart() -> str:
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(9))


def raw_before(offset: int, state: dict) -> None:
    addr = f"{localpart()}@[127.0.0.1]"
    password = "".join(random.choice(string.ascii_letters + string.digits) for _ in range(16))
    marker = f"relaybox-image-test-{random.randrange(10**9)}"
    try:
        c = imap(offset)
        typ, _ = c.login(addr, password)
        state["created"] = typ == "OK"
        report("imap-login-creates-account", typ == "OK", addr)
        body = (
            f"From: <{addr}>\r\nTo: <{addr}>\r\nSubject: persist\r\n"
            f"Message-ID: <{marker}@127.0.0.1>\r\n\r\n{marker}\r\n"
        ).encode()
        typ, _ = c.append("INBOX", None, None, body)
        report("imap-append", typ == "OK")
        c.logout()
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        report("imap-raw", False, repr(e))
    state.update(addr=addr, password=password, marker=marker)
    state.setdefault("created", False)


def raw_after(offset: int, state: dict) -> None:
    if not state.get("created"):
        report("account-persisted", False, "no account was created before the reboot")
        return
    try:
        c = imap(offset)
        try:
            c.login(state["addr"], state["password"] + "x")
            report("account-persisted-wrong-password-refused", False, "wrong password accepted")
        except imaplib.IMAP4.error:
            report("account-persisted-wrong-password-refused", True)
        c = imap(offset)
        typ, _ = c.login(state["addr"], state["password"])
        report("account-persisted-login", typ == "OK")
        typ, data = c.select("INBOX")
        exists = int(data[0]) if typ == "OK" else 0
        found = False
        if exists:
            typ, data = c.search(None, "BODY", state["marker"])
            found = typ == "OK" and bool(data[0].split())
            if not found:
                typ, data = c.fetch("1:*", "(BODY.PEEK[TEXT])")
                found = state["marker"].encode() in b"".join(
                    p[1] for p in data if isinstance(p, tuple)
                )
        report("message-persisted", found, f"INBOX has {exists} message(s)")
        c.logout()
    except Exception as e:  # noqa: BLE001
        report("imap-raw-after-reboot", False, repr(e))


class Ports:
    """Stands in for relayharness.RelayProcess: only ports and addresses are used."""

    def __init__(self, offset: int):
        std = {"smtp": 25, "submission": 587, "submissions": 465, "imap": 143,
               "imaps": 993, "https": 443, "http": 80}
        self.ports = {k: v + offset for k, v in std.items()}


def chat(offset: int, state_dir: Path, phase: str) -> None:
    try:
        from deltachat_rpc_client import DeltaChat, Rpc
        import relayharness as h
    except Exception as e:  # noqa: BLE001
        report(f"deltachat-1to1-{phase}", None, f"Delta Chat client not importable: {e}")
        return
    rpc_bin = h.rpc_server_binary()
    accounts = state_dir / "dc-accounts"
    relay = Ports(offset)
    text = f"{phase}-{random.randrange(10**6)}"
    try:
        with Rpc(accounts_dir=str(accounts), rpc_server_path=rpc_bin) as rpc:
            dc = DeltaChat(rpc)
            if phase == "before":
                clients = []
                for _ in range(2):
                    addr, pw = f"{localpart()}@[127.0.0.1]", h.random_password()
                    url = h.RelayProcess.dclogin_url(relay, addr, pw)
                    clients.append(h.online_client(dc, url, addr, pw, timeout=120))
                a, b = clients
            else:
                accs = dc.get_all_accounts()
                assert len(accs) == 2, f"expected 2 saved accounts, found {len(accs)}"
                a, b = (
                    h.Client(acc, acc.get_config("configured_addr") or acc.get_config("addr"), "")
                    for acc in accs
                )
                for c in (a, b):
                    h.call_with_timeout(c.account.bring_online, 120, f"bring {c.addr} online")
                    c.events.drain()
            chat_ab = h.accepted_chat(a, b)
            t0 = time.monotonic()
            chat_ab.send_text(text)
            msg = b.events.wait_incoming(120, text)
            snap = msg.get_snapshot()
            report(f"deltachat-1to1-{phase}", bool(snap.show_padlock),
                   f"{a.addr} -> {b.addr} in {time.monotonic() - t0:.1f} s, encrypted={snap.show_padlock}")
            snap.chat.send_text("re:" + text)
            reply = a.events.wait_incoming(120, "re:" + text)
            report(f"deltachat-reply-{phase}", reply.get_snapshot().chat_id == chat_ab.id)
    except Exception as e:  # noqa: BLE001
        report(f"deltachat-1to1-{phase}", False, repr(e)[:400])


def main() -> int:
    phase, offset, state_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file = state_dir / "raw.json"
    if phase == "before":
        state: dict = {"created": False}
        raw_before(offset, state)
        state_file.write_text(json.dumps(state))
    else:
        raw_after(offset, json.loads(state_file.read_text()))
    if os.environ.get("RELAYBOX_IMAGE_NO_DC") != "1":
        chat(offset, state_dir, phase)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
