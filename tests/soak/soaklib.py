"""Shared parts of the durability soak tests (tests/soak/kill9, tests/image/powercut.sh).

Owns: the test messages (PGP/MIME-shaped encrypted mail that passes the relay's encryption
gate, as tests/blackbox/src/mail.rs builds them), the traffic (SMTP submitters over implicit
TLS with AUTH, one account each, and a Delta-Chat-like IMAP receiver per recipient that
fetches new messages, sets \\Seen on some and \\Deleted + UID EXPUNGE on most), the ledger of
what the relay acknowledged (an append-only JSON-lines file, so another process can check
it), and the check of a relay's mailboxes against the ledger.

What a check asserts, per recipient mailbox (Message-IDs are unique per message):
  lost        a message that got `250` and whose expunge was never even sent is missing
  duplicated  a Message-ID is in the mailbox more than once
  revived     a message whose UID EXPUNGE got `OK` is back
  refused     a message the relay refused after DATA (4xx/5xx) is stored anyway
  flags-lost  a message whose STORE +FLAGS (\\Seen) got `OK` is there without \\Seen
  uid-changed one UID (same UIDVALIDITY) names another message than before, or a message
              has another UID than before
  corrupt     (full check) the stored body differs from the one sent
Messages in doubt (DATA sent, the relay died before answering; EXPUNGE sent, no answer)
may be there or not, but never twice.

Standard library only: runs with the system python3 or the repository's .venv. Talks only
to 127.0.0.1. Every network operation has a timeout and every loop a bound.
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import json
import os
import random
import re
import smtplib
import socket
import ssl
import string
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
DOMAIN = "[127.0.0.1]"
# Socket timeout of every client operation (a relay that died answers at once with a reset;
# one that hangs is a finding, reported as an error).
IO_TIMEOUT = 15.0
# Size of the random SEIPD packet: with the armor and headers a message is about 3.9 KB
# (the 3.8 KB messages).
PAYLOAD_LEN = 2500

_LOWER_DIGITS = string.ascii_lowercase + string.digits
_PASSWORD_CHARS = string.ascii_letters + string.digits


# --- messages ----------------------------------------------------------------------------------


def random_string(n: int, alphabet: str, rng: random.Random | None = None) -> str:
    r = rng or random.SystemRandom()
    return "".join(r.choice(alphabet) for _ in range(n))


def new_account() -> dict:
    """A fresh account of the IP-only relay (created by its first login, ACC-5)."""
    local = random_string(9, _LOWER_DIGITS)
    return {"addr": f"{local}@{DOMAIN}", "password": random_string(16, _PASSWORD_CHARS)}


def _crc24_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return table


_CRC24 = _crc24_table()


def crc24(data: bytes) -> int:
    """RFC 4880 §6.1: CRC-24 of the armored data (table-driven)."""
    crc = 0xB704CE
    for b in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ _CRC24[((crc >> 16) ^ b) & 0xFF]
    return crc


def new_format_length(n: int) -> bytes:
    """RFC 4880 §4.2.2: a new-format packet length."""
    if n < 192:
        return bytes([n])
    if n < 8384:
        v = n - 192
        return bytes([(v >> 8) + 192, v & 0xFF])
    return b"\xff" + n.to_bytes(4, "big")


def packet(tag: int, body: bytes) -> bytes:
    """RFC 4880 §4.2: a new-format packet."""
    return bytes([0xC0 | tag]) + new_format_length(len(body)) + body


def encrypted_payload(seipd_len: int) -> bytes:
    """PKESK v3 (RFC 4880 §5.1) with a random key id and 2048-bit "MPI", then SEIPD v1
    (§5.13) of random bytes: what the relay's gate accepts; no key can open it."""
    mpi = bytearray(os.urandom(256))
    mpi[0] |= 0x80
    pkesk = b"\x03" + os.urandom(8) + b"\x01" + (2048).to_bytes(2, "big") + bytes(mpi)
    seipd = b"\x01" + os.urandom(max(seipd_len, 1))
    return packet(1, pkesk) + packet(18, seipd)


def armor(data: bytes) -> str:
    """RFC 4880 §6.2 armor, CRLF line ends, 76-character lines, CRC-24."""
    b64 = base64.b64encode(data).decode()
    lines = [b64[i : i + 76] for i in range(0, len(b64), 76)]
    crc = base64.b64encode(crc24(data).to_bytes(3, "big")).decode()
    return (
        "-----BEGIN PGP MESSAGE-----\r\n\r\n"
        + "".join(line + "\r\n" for line in lines)
        + f"={crc}\r\n-----END PGP MESSAGE-----\r\n"
    )


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:20]


def split_message(msg: bytes) -> tuple[bytes, bytes]:
    pos = msg.find(b"\r\n\r\n")
    if pos < 0:
        return msg, b""
    return msg[: pos + 2], msg[pos + 4 :]


def encrypted_mail(sender: str, rcpts: list[str], payload_len: int = PAYLOAD_LEN) -> tuple[str, bytes]:
    """A PGP/MIME message (RFC 3156 §4) from `sender` to `rcpts`: (Message-ID, bytes)."""
    message_id = random_string(24, _LOWER_DIGITS) + "@soak.test"
    boundary = random_string(30, _PASSWORD_CHARS)
    head = (
        f"From: <{sender}>\r\n"
        f"To: {', '.join('<' + r + '>' for r in rcpts)}\r\n"
        "Subject: [...]\r\n"
        "Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "Chat-Version: 1.0\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        f'\tboundary="{boundary}"\r\n'
    )
    body = (
        f"--{boundary}\r\n"
        "Content-Description: PGP/MIME version identification\r\n"
        "Content-Type: application/pgp-encrypted\r\n\r\n"
        "Version: 1\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Description: OpenPGP encrypted message\r\n"
        'Content-Disposition: inline; filename="encrypted.asc";\r\n'
        'Content-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
        + armor(encrypted_payload(payload_len))
        + f"\r\n--{boundary}--\r\n"
    )
    return message_id, (head + "\r\n" + body).encode()


def tls_context() -> ssl.SSLContext:
    """The relays under test have self-signed certificates."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --- the ledger ----------------------------------------------------------------------------


class Ledger:
    """What was sent and what the relay acknowledged, in memory and appended to a JSON-lines
    file (one event per line, flushed at once). Events:

      {"e": "send", "id", "to": [rcpt...], "h": body hash}   before the DATA body is sent
      {"e": "ack", "id"} / {"e": "refused", "id", "code"}    the reply after DATA
      {"e": "xtry", "to", "ids"} / {"e": "xok", "to", "ids"} UID EXPUNGE sent / answered OK
      {"e": "seen", "to", "ids"}                             STORE +FLAGS (\\Seen) answered OK
      {"e": "uid", "to", "v": uidvalidity, "uid", "id"}     a UID seen by the receiver
    """

    def __init__(self, path: Path | None):
        self.lock = threading.Lock()
        self.sent: dict[str, tuple[tuple[str, ...], str]] = {}
        self.acked: set[str] = set()
        self.refused: set[str] = set()
        self.xtry: set[tuple[str, str]] = set()
        self.xok: set[tuple[str, str]] = set()
        self.seen: set[tuple[str, str]] = set()
        # (rcpt, uidvalidity, uid) -> id and (rcpt, id) -> (uidvalidity, uid)
        self.uid_to_id: dict[tuple[str, int, int], str] = {}
        self.id_to_uid: dict[tuple[str, str], tuple[int, int]] = {}
        self.uid_conflicts: list[str] = []
        self.path = path
        self.file = None
        if path is not None:
            if path.exists():
                self._load(path)
            self.file = open(path, "a", encoding="utf-8")

    def _load(self, path: Path) -> None:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short when the writer was killed
                self._apply(ev)

    def _apply(self, ev: dict) -> None:
        e = ev["e"]
        if e == "send":
            self.sent[ev["id"]] = (tuple(ev["to"]), ev["h"])
        elif e == "ack":
            self.acked.add(ev["id"])
        elif e == "refused":
            self.refused.add(ev["id"])
        elif e == "xtry":
            self.xtry.update((ev["to"], i) for i in ev["ids"])
        elif e == "xok":
            self.xok.update((ev["to"], i) for i in ev["ids"])
        elif e == "seen":
            self.seen.update((ev["to"], i) for i in ev["ids"])
        elif e == "uid":
            self._uid(ev["to"], ev["v"], ev["uid"], ev["id"])
        # "kill" and other marks are for reading the file, not for the check.

    def _uid(self, rcpt: str, validity: int, uid: int, mid: str) -> None:
        key = (rcpt, validity, uid)
        old = self.uid_to_id.get(key)
        if old is not None and old != mid:
            self.uid_conflicts.append(f"{rcpt} UID {uid} was {old}, now {mid}")
        old_uid = self.id_to_uid.get((rcpt, mid))
        if old_uid is not None and old_uid != (validity, uid):
            self.uid_conflicts.append(f"{rcpt} {mid} had UID {old_uid[1]}, now {uid}")
        self.uid_to_id[key] = mid
        self.id_to_uid[(rcpt, mid)] = (validity, uid)

    def record(self, ev: dict) -> None:
        with self.lock:
            self._apply(ev)
            if self.file is not None:
                self.file.write(json.dumps(ev, separators=(",", ":")) + "\n")
                self.file.flush()

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None


# --- traffic ------------------------------------------------------------------------------------


class Gate:
    """Lets the traffic run while the relay is up: the kill-9 soak closes it before each kill
    and opens it again once the restarted relay accepts logins, so a worker whose connection
    died waits instead of hammering a relay that is not there. The power-cut test leaves it
    open (workers then retry every `retry_pause`)."""

    def __init__(self, opened: bool = False):
        self.cv = threading.Condition()
        self.is_open = opened
        self.stopped = False

    def open(self) -> None:
        with self.cv:
            self.is_open = True
            self.cv.notify_all()

    def close(self) -> None:
        with self.cv:
            self.is_open = False

    def stop(self) -> None:
        with self.cv:
            self.stopped = True
            self.is_open = False
            self.cv.notify_all()

    def wait_open(self, timeout: float) -> bool:
        """True once the gate is open; False when stopped or after `timeout` seconds."""
        end = time.monotonic() + timeout
        with self.cv:
            while not self.stopped:
                if self.is_open:
                    return True
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(min(left, 0.5))
            return False


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    acked: int = 0
    refused: int = 0
    refusals: dict = field(default_factory=dict)
    expunged: int = 0
    seen: int = 0
    fetched: int = 0
    fetch_corrupt: int = 0
    conn_errors: int = 0
    conn_errors_open: int = 0
    errors: list = field(default_factory=list)

    def add(self, **kw) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def error(self, text: str) -> None:
        with self.lock:
            if len(self.errors) < 200:
                self.errors.append(text)


# One kind of failure when the relay goes away under a client.
CONN_ERRORS = (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.abort, ssl.SSLError)


class Traffic:
    """Submitters and receivers against one relay on 127.0.0.1 (ports given)."""

    def __init__(
        self,
        submissions_port: int,
        imaps_port: int,
        senders: list[dict],
        rcpts: list[dict],
        ledger: Ledger,
        gate: Gate,
        seed: int,
        keep_fraction: float = 0.1,
        delete_fraction: float = 0.8,
        poll: float = 0.1,
        retry_pause: float = 0.2,
    ):
        self.smtp_port = submissions_port
        self.imaps_port = imaps_port
        self.senders = senders
        self.rcpts = rcpts
        self.ledger = ledger
        self.gate = gate
        self.seed = seed
        self.keep_fraction = keep_fraction
        self.delete_fraction = delete_fraction
        self.poll = poll
        self.retry_pause = retry_pause
        self.stats = Stats()
        self.threads: list[threading.Thread] = []
        # How many messages got `250`, for the power-cut driver.
        self.ack_event = threading.Condition()

    def start(self) -> None:
        for i, s in enumerate(self.senders):
            t = threading.Thread(target=self._submitter, args=(i, s), name=f"submit-{i}", daemon=True)
            self.threads.append(t)
        for i, r in enumerate(self.rcpts):
            t = threading.Thread(target=self._receiver, args=(i, r), name=f"receive-{i}", daemon=True)
            self.threads.append(t)
        for t in self.threads:
            t.start()

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Stop every worker; the names of those that did not end within `timeout`."""
        self.gate.stop()
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]

    # A session runs until its connection fails or for a bounded number of messages (a real
    # client reconnects now and then too).
    def _submitter(self, index: int, account: dict) -> None:
        rng = random.Random(self.seed * 1000 + index)
        while self.gate.wait_open(3600):
            try:
                s = smtplib.SMTP_SSL(HOST, self.smtp_port, context=tls_context(), timeout=IO_TIMEOUT)
            except CONN_ERRORS as e:
                self._conn_error(f"submitter {index} connect", e)
                continue
            try:
                s.login(account["addr"], account["password"])
                for _ in range(rng.randint(1, 200)):
                    if not self.gate.is_open:
                        break
                    self._send_one(s, account["addr"], rng)
                s.quit()
            except smtplib.SMTPAuthenticationError as e:
                self.stats.error(f"submitter {index}: AUTH refused: {e}")
                time.sleep(self.retry_pause)
            except CONN_ERRORS as e:
                self._conn_error(f"submitter {index}", e)
            finally:
                try:
                    s.close()
                except Exception:  # noqa: BLE001 - closing a dead socket
                    pass

    def _conn_error(self, where: str, e: BaseException) -> None:
        """A connection failed. While the gate is closed that is the kill; while it is open
        it is unexpected (reported, not a failure: the check decides)."""
        if self.gate.is_open and not self.gate.stopped:
            self.stats.add(conn_errors_open=1)
            self.stats.error(f"{where}: {e!r}")
            time.sleep(self.retry_pause)
        else:
            self.stats.add(conn_errors=1)

    def _send_one(self, s: smtplib.SMTP, sender: str, rng: random.Random) -> None:
        n = 2 if rng.random() < 0.2 and len(self.rcpts) > 1 else 1
        rcpts = [r["addr"] for r in rng.sample(self.rcpts, n)]
        mid, msg = encrypted_mail(sender, rcpts)
        code, text = s.mail(sender)
        if code != 250:
            self._refused(mid, code, text, "MAIL")
            s.rset()
            return
        for r in rcpts:
            code, text = s.rcpt(r)
            if code not in (250, 251):
                self._refused(mid, code, text, "RCPT")
                s.rset()
                return
        code, text = s.docmd("DATA")
        if code != 354:
            self._refused(mid, code, text, "DATA")
            s.rset()
            return
        # From here on the message may be stored: it is in doubt until the reply.
        self.ledger.record({"e": "send", "id": mid, "to": rcpts, "h": body_hash(split_message(msg)[1])})
        self.stats.add(sent=1)
        # smtplib.data() would send DATA itself; the body with dot-stuffing (RFC 5321 §4.5.2).
        q = re.sub(rb"(?m)^\.", b"..", msg)
        if not q.endswith(b"\r\n"):
            q += b"\r\n"
        s.send(q + b".\r\n")
        code, text = s.getreply()
        if code == 250:
            self.ledger.record({"e": "ack", "id": mid})
            self.stats.add(acked=1)
            with self.ack_event:
                self.ack_event.notify_all()
        else:
            self.ledger.record({"e": "refused", "id": mid, "code": code})
            self._refused(mid, code, text, "end of DATA")

    def _refused(self, mid: str, code: int, text: bytes, stage: str) -> None:
        key = f"{stage} {code}"
        with self.stats.lock:
            self.stats.refused += 1
            self.stats.refusals[key] = self.stats.refusals.get(key, 0) + 1
        if code < 400 or code >= 600:
            self.stats.error(f"{stage}: unexpected reply {code} {text!r}")

    def _receiver(self, index: int, account: dict) -> None:
        rng = random.Random(self.seed * 1000 + 500 + index)
        # Like Delta Chat, the receiver remembers the last UID it fetched (per UIDVALIDITY).
        seen_upto: dict[int, int] = {}
        while self.gate.wait_open(3600):
            try:
                c = imap_login(self.imaps_port, account)
            except imaplib.IMAP4.abort as e:
                self._conn_error(f"receiver {index} login", e)
                continue
            except imaplib.IMAP4.error as e:
                self.stats.error(f"receiver {index}: LOGIN refused: {e}")
                time.sleep(self.retry_pause)
                continue
            except CONN_ERRORS as e:
                self._conn_error(f"receiver {index} login", e)
                continue
            try:
                self._receive_session(c, account["addr"], rng, seen_upto)
            except imaplib.IMAP4.abort as e:
                self._conn_error(f"receiver {index}", e)
            except imaplib.IMAP4.error as e:
                self.stats.error(f"receiver {index}: {e}")
                time.sleep(self.retry_pause)
            except CONN_ERRORS as e:
                self._conn_error(f"receiver {index}", e)
            finally:
                try:
                    c.shutdown()
                except Exception:  # noqa: BLE001
                    pass

    def _receive_session(self, c: imaplib.IMAP4_SSL, rcpt: str, rng: random.Random, seen_upto: dict) -> None:
        validity = select_inbox(c)
        last = seen_upto.get(validity, 0)
        # Bounded: a session ends after this many rounds (and reconnects).
        for _ in range(20000):
            if not self.gate.is_open:
                return
            msgs = fetch(c, f"{last + 1}:*", bodies=True)
            msgs = [m for m in msgs if m.uid > last]
            if not msgs:
                time.sleep(self.poll)
                continue
            last = max(m.uid for m in msgs)
            seen_upto[validity] = last
            self.stats.add(fetched=len(msgs))
            delete, seen = [], []
            for m in msgs:
                if m.mid is None:
                    self.stats.error(f"{rcpt}: UID {m.uid} without Message-ID")
                    continue
                self.ledger.record({"e": "uid", "to": rcpt, "v": validity, "uid": m.uid, "id": m.mid})
                sent = self.ledger.sent.get(m.mid)
                if sent is not None and m.text is not None and body_hash(m.text) != sent[1]:
                    self.stats.add(fetch_corrupt=1)
                    self.stats.error(f"{rcpt}: {m.mid} fetched with another body")
                if keeps(m.mid, self.keep_fraction):
                    if "\\Seen" not in m.flags:
                        seen.append(m)
                elif rng.random() < self.delete_fraction:
                    delete.append(m)
                elif "\\Seen" not in m.flags and rng.random() < 0.5:
                    seen.append(m)
            for chunk in chunks(seen, 200):
                uids = ",".join(str(m.uid) for m in chunk)
                typ, _ = c.uid("STORE", uids, "+FLAGS", "(\\Seen)")
                if typ == "OK":
                    self.ledger.record({"e": "seen", "to": rcpt, "ids": [m.mid for m in chunk]})
                    self.stats.add(seen=len(chunk))
                else:
                    self.stats.error(f"{rcpt}: STORE \\Seen answered {typ}")
            for chunk in chunks(delete, 200):
                uids = ",".join(str(m.uid) for m in chunk)
                typ, _ = c.uid("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)")
                if typ != "OK":
                    self.stats.error(f"{rcpt}: STORE \\Deleted answered {typ}")
                    continue
                ids = [m.mid for m in chunk]
                self.ledger.record({"e": "xtry", "to": rcpt, "ids": ids})
                typ, _ = c.uid("EXPUNGE", uids)  # RFC 4315 §2.1 (UIDPLUS)
                if typ == "OK":
                    self.ledger.record({"e": "xok", "to": rcpt, "ids": ids})
                    self.stats.add(expunged=len(chunk))
                else:
                    self.stats.error(f"{rcpt}: UID EXPUNGE answered {typ}")


def keeps(mid: str, fraction: float) -> bool:
    """Whether the receiver keeps this message for good (a stable choice per message, so
    some messages stay in the store through many restarts and checkpoints)."""
    return int(hashlib.sha256(mid.encode()).hexdigest()[:8], 16) < fraction * 0x100000000


def chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


# --- IMAP helpers ----------------------------------------------------------------------------------


def imap_login(port: int, account: dict, timeout: float = IO_TIMEOUT) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL(HOST, port, ssl_context=tls_context(), timeout=timeout)
    try:
        c.login(account["addr"], account["password"])
    except BaseException:
        try:
            c.shutdown()
        except Exception:  # noqa: BLE001
            pass
        raise
    return c


def select_inbox(c: imaplib.IMAP4_SSL) -> int:
    typ, _ = c.select("INBOX")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"SELECT INBOX answered {typ}")
    v = c.response("UIDVALIDITY")[1]
    return int(v[0]) if v and v[0] else 0


@dataclass
class Fetched:
    uid: int
    flags: set
    mid: str | None
    text: bytes | None


_MID_RE = re.compile(rb"(?im)^message-id:\s*<([^>\r\n]*)>")
_UID_RE = re.compile(rb"\bUID (\d+)")
_FLAGS_RE = re.compile(rb"\bFLAGS \(([^)]*)\)")


def fetch(c: imaplib.IMAP4_SSL, uids: str, bodies: bool) -> list[Fetched]:
    """UID FETCH `uids` → UID, FLAGS, Message-ID and (bodies) the body after the header."""
    items = "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]" + (" BODY.PEEK[TEXT])" if bodies else ")")
    typ, data = c.uid("FETCH", uids, items)
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH answered {typ}")
    out: list[Fetched] = []
    meta = b""
    header = text = None

    def flush() -> None:
        if not meta:
            return
        u = _UID_RE.search(meta)
        if u is None:
            return
        f = _FLAGS_RE.search(meta)
        m = _MID_RE.search(header or b"")
        out.append(
            Fetched(
                uid=int(u.group(1)),
                flags=set(f.group(1).decode().split()) if f else set(),
                mid=m.group(1).decode() if m else None,
                text=text,
            )
        )

    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            head, lit = item
            if re.match(rb"^\d+ \(", head):
                flush()
                meta, header, text = head, None, None
            else:
                meta += head
            if b"BODY[HEADER.FIELDS" in head:
                header = lit
            elif b"BODY[TEXT]" in head:
                text = lit
        else:
            if re.match(rb"^\d+ \(", item):
                flush()
                meta, header, text = item, None, None
            else:
                meta += item
    flush()
    return out


# --- the check ---------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    acked: int = 0
    expected: int = 0  # acked (message, recipient) pairs that must be present
    present: int = 0
    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    revived: list = field(default_factory=list)
    refused_stored: list = field(default_factory=list)
    flags_lost: list = field(default_factory=list)
    uid_changed: list = field(default_factory=list)
    corrupt: list = field(default_factory=list)
    unknown: list = field(default_factory=list)
    doubt_present: int = 0
    doubt_absent: int = 0
    seconds: float = 0.0

    def failures(self) -> int:
        return (
            len(self.lost)
            + len(self.duplicated)
            + len(self.revived)
            + len(self.refused_stored)
            + len(self.flags_lost)
            + len(self.uid_changed)
            + len(self.corrupt)
        )

    def summary(self) -> str:
        return (
            f"{self.expected} acknowledged copies expected, {self.present} stored; "
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
            f"revived {len(self.revived)}, refused-but-stored {len(self.refused_stored)}, "
            f"flags lost {len(self.flags_lost)}, UID changed {len(self.uid_changed)}, "
            f"corrupt {len(self.corrupt)}; in doubt: {self.doubt_present} stored, "
            f"{self.doubt_absent} not"
        )

    def details(self, limit: int = 10) -> list[str]:
        out = []
        for name in ("lost", "duplicated", "revived", "refused_stored", "flags_lost", "uid_changed", "corrupt", "unknown"):
            items = getattr(self, name)
            if items:
                out.append(f"{name}: {len(items)}, e.g. {items[:limit]}")
        return out


def check(imaps_port: int, rcpts: list[dict], ledger: Ledger, bodies: bool) -> CheckResult:
    """Compare every recipient's INBOX with the ledger (see the module doc for what is
    asserted). Safe while traffic runs: what must be present is taken before the FETCH,
    what excuses an absence after it."""
    t0 = time.monotonic()
    r = CheckResult()
    with ledger.lock:
        acked = set(ledger.acked)
        xok = set(ledger.xok)
        seen = set(ledger.seen)
        refused = set(ledger.refused)
    mailboxes: dict[str, tuple[int, list[Fetched]]] = {}
    for account in rcpts:
        c = imap_login(imaps_port, account, timeout=120)
        try:
            validity = select_inbox(c)
            mailboxes[account["addr"]] = (validity, fetch(c, "1:*", bodies=bodies))
            c.logout()
        finally:
            try:
                c.shutdown()
            except Exception:  # noqa: BLE001
                pass
    with ledger.lock:
        xtry = set(ledger.xtry)
        sent = dict(ledger.sent)
        acked_after = set(ledger.acked)
        refused_after = set(ledger.refused)
    r.acked = len(acked)
    for rcpt, (validity, msgs) in mailboxes.items():
        counts: dict[str, int] = {}
        for m in msgs:
            if m.mid is None:
                r.unknown.append(f"{rcpt} UID {m.uid} without Message-ID")
                continue
            counts[m.mid] = counts.get(m.mid, 0) + 1
            key = (rcpt, m.mid)
            if m.mid not in sent:
                r.unknown.append(f"{rcpt} {m.mid}")
                continue
            # UIDs are stable: one UID, one message; one message, one UID.
            known = ledger.id_to_uid.get(key)
            if known is not None and known != (validity, m.uid):
                r.uid_changed.append(f"{rcpt} {m.mid}: UID {known[1]} (validity {known[0]}) now {m.uid} (validity {validity})")
            other = ledger.uid_to_id.get((rcpt, validity, m.uid))
            if other is not None and other != m.mid:
                r.uid_changed.append(f"{rcpt} UID {m.uid}: was {other}, now {m.mid}")
            if key in xok:
                r.revived.append(f"{rcpt} {m.mid}")
            if m.mid in refused:
                r.refused_stored.append(f"{rcpt} {m.mid}")
            if key in seen and "\\Seen" not in m.flags:
                r.flags_lost.append(f"{rcpt} {m.mid}")
            if bodies and m.text is not None and body_hash(m.text) != sent[m.mid][1]:
                r.corrupt.append(f"{rcpt} {m.mid}")
        r.present += sum(counts.values())
        for mid, n in counts.items():
            if n > 1:
                r.duplicated.append(f"{rcpt} {mid}")
        for mid in acked:
            to, _ = sent.get(mid, ((), ""))
            if rcpt not in to or (rcpt, mid) in xtry:
                continue
            r.expected += 1
            if counts.get(mid, 0) == 0:
                r.lost.append(f"{rcpt} {mid}")
        for mid, (to, _) in sent.items():
            if rcpt in to and mid not in acked_after and mid not in refused_after:
                if counts.get(mid, 0):
                    r.doubt_present += 1
                elif (rcpt, mid) not in xtry:
                    r.doubt_absent += 1
    r.seconds = time.monotonic() - t0
    return r


def create_accounts(imaps_port: int, accounts: list[dict], deadline: float) -> None:
    """Log each account in once over IMAP (the first login creates it, ACC-5)."""
    for a in accounts:
        while True:
            try:
                imap_login(imaps_port, a).logout()
                break
            except (*CONN_ERRORS, imaplib.IMAP4.error) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot create account {a['addr']}: {e!r}") from e
                time.sleep(0.5)


def wait_login(imaps_port: int, account: dict, deadline: float, alive=lambda: True) -> bool:
    """Poll until `account` can log in over IMAPS (bounded by `deadline`)."""
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            imap_login(imaps_port, account, timeout=5).logout()
            return True
        except (*CONN_ERRORS, imaplib.IMAP4.error):
            time.sleep(0.02)
    return False


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_section(path: Path, name: str, text: str) -> None:
    """Replace (or append) the section between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
    of a results file; the rest of the file is left as it is."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        _, tail = rest.split(end, 1)
        new = head + block + tail
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)
