"""The encryption gate on submission (SUB-9): a cleartext mail from a logged-in relay
account, sent with Python's smtplib over implicit TLS, is refused after DATA with
`523 Encryption Needed: Invalid Unencrypted Mail` and not stored."""

from __future__ import annotations

import email.utils
import imaplib
import smtplib

import pytest

from relayharness import insecure_tls, random_password

pytestmark = pytest.mark.timeout(60)


def smtp_login(relay, addr: str, password: str) -> smtplib.SMTP_SSL:
    conn = smtplib.SMTP_SSL(
        "127.0.0.1",
        relay.ports["submissions"],
        local_hostname="[127.0.0.1]",  # RFC 5321 §4.1.3 address literal
        context=insecure_tls(),
        timeout=30,
    )
    conn.login(addr, password)  # first login creates the account (ACC-6)
    return conn


def cleartext(sender: str, recipient: str) -> str:
    return (
        f"From: <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        "Subject: plain text\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain='127.0.0.1')}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "This is not encrypted.\r\n"
    )


def test_cleartext_submission_refused(relay):
    sender, sender_pw = relay.new_address(), random_password()
    recipient, recipient_pw = relay.new_address(), random_password()
    # Create the recipient by logging in once.
    with smtp_login(relay, recipient, recipient_pw) as conn:
        assert conn.noop()[0] == 250

    with smtp_login(relay, sender, sender_pw) as conn:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            conn.sendmail(sender, [recipient], cleartext(sender, recipient))
        code, text = refused.value.smtp_code, refused.value.smtp_error
        assert (code, text) == (523, b"Encryption Needed: Invalid Unencrypted Mail"), (code, text)
        # The session goes on after a refused transaction (RFC 5321 §4.1.4).
        assert conn.noop()[0] == 250

    # Nothing was stored for the recipient.
    imap = imaplib.IMAP4_SSL("127.0.0.1", relay.ports["imaps"], ssl_context=insecure_tls(), timeout=30)
    try:
        imap.login(recipient, recipient_pw)
        typ, data = imap.select("INBOX")
        assert typ == "OK", (typ, data)
        assert int(data[0]) == 0, f"INBOX holds {data[0]!r} messages after a refused mail"
    finally:
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
