//! The IMAP commands of IMAP-3 in the order a Delta Chat-like client uses them, over
//! 993 against the real binary, each asserting its tagged OK and the untagged data
//! that matters (RFC 9051, RFC 4315 UIDPLUS, RFC 6851 MOVE, RFC 9208 QUOTA).

use relaybox_blackbox::imap::{exists_count, quote};
use relaybox_blackbox::mail::{base64, stored_message_id};
use relaybox_blackbox::{Account, Imap, Relay, Smtp, create_account, encrypted_mail};

fn uid_of(line: &str) -> Option<u32> {
    line.split("UID ")
        .nth(1)?
        .split([' ', ')'])
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_chat_like_command_sequence() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let mut sent = Vec::new();
    for _ in 0..4 {
        let m = encrypted_mail(&a.addr, &[&a.addr]);
        let r = Smtp::submit(&relay, &a, &[&a.addr], &m.bytes).await;
        assert_eq!(r.code, 250, "{r}");
        sent.push(m);
    }

    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    // ACC-1: AUTHENTICATE PLAIN with SASL-IR (RFC 4959).
    let token = base64(format!("\0{}\0{}", a.addr, a.password).as_bytes());
    let r = c.cmd(&format!("AUTHENTICATE PLAIN {token}")).await;
    assert!(r.is_ok(), "AUTHENTICATE PLAIN: {r}");
    // ID (RFC 2971).
    let r = c.cmd("ID (\"name\" \"blackbox\" \"version\" \"1\")").await;
    assert!(r.is_ok(), "ID: {r}");
    assert!(
        r.untagged_text().iter().any(|l| l.starts_with("* ID ")),
        "ID: {r}"
    );
    // ENABLE (RFC 5161).
    let r = c.cmd("ENABLE CONDSTORE").await;
    assert!(r.is_ok(), "ENABLE: {r}");
    // LIST.
    let r = c.cmd("LIST \"\" \"*\"").await;
    assert!(r.is_ok(), "LIST: {r}");
    assert!(
        r.untagged_text()
            .iter()
            .any(|l| l.starts_with("* LIST ") && l.ends_with("INBOX")),
        "LIST shows INBOX: {r}"
    );
    let r = c.cmd("CREATE Trash").await;
    assert!(r.is_ok(), "CREATE Trash: {r}");
    // STATUS.
    let r = c.cmd("STATUS INBOX (UIDNEXT UIDVALIDITY MESSAGES)").await;
    assert!(r.is_ok(), "STATUS: {r}");
    let status = r.untagged_text().join("\n");
    assert!(status.contains("MESSAGES 4"), "STATUS: {status}");
    assert!(status.contains("UIDNEXT 5"), "STATUS: {status}");
    assert!(status.contains("UIDVALIDITY "), "STATUS: {status}");
    // EXAMINE is read-only.
    let r = c.cmd("EXAMINE INBOX").await;
    assert!(
        r.is_ok() && r.tagged.contains("[READ-ONLY]"),
        "EXAMINE: {r}"
    );
    // SELECT.
    let r = c.cmd("SELECT INBOX").await;
    assert!(
        r.is_ok() && r.tagged.contains("[READ-WRITE]"),
        "SELECT: {r}"
    );
    assert_eq!(exists_count(&r), Some(4), "SELECT: {r}");
    let text = r.untagged_text().join("\n");
    assert!(text.contains("[UIDVALIDITY "), "SELECT: {r}");
    assert!(text.contains("[UIDNEXT 5]"), "SELECT: {r}");
    // UID FETCH of the fields core asks for.
    let r = c
        .cmd("UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID FROM)])")
        .await;
    assert!(r.is_ok(), "UID FETCH: {r}");
    let fetches: Vec<_> = r
        .untagged
        .iter()
        .filter(|l| l.text().contains(" FETCH ("))
        .collect();
    assert_eq!(fetches.len(), 4, "UID FETCH 1:*: {r}");
    for (l, m) in fetches.iter().zip(&sent) {
        let header = l.literals.first().expect("header literal");
        let header = String::from_utf8_lossy(header);
        assert!(header.contains(&m.message_id), "HEADER.FIELDS: {header}");
        assert!(
            !header.contains("Content-Type"),
            "HEADER.FIELDS returned more: {header}"
        );
        assert!(
            header.ends_with("\r\n\r\n"),
            "HEADER.FIELDS ends with a blank line: {header:?}"
        );
    }
    // BODY.PEEK[] returns the stored bytes; RFC822.SIZE is their length (IMAP-6).
    let r = c.cmd("UID FETCH 1 (RFC822.SIZE BODY.PEEK[])").await;
    assert!(r.is_ok(), "{r}");
    let line = r
        .untagged
        .iter()
        .find(|l| l.text().contains(" FETCH ("))
        .expect("FETCH line");
    let body = line.literals.first().expect("body literal");
    assert_eq!(stored_message_id(body), Some(sent[0].message_id.clone()));
    assert!(
        line.text().contains(&format!("RFC822.SIZE {}", body.len())),
        "IMAP-6: {line}"
    );
    // PEEK did not set \Seen.
    let r = c.cmd("UID FETCH 1 (FLAGS)").await;
    assert!(
        !r.untagged_text().join("").contains("\\Seen"),
        "BODY.PEEK set \\Seen: {r}"
    );
    // UID STORE ±FLAGS.
    let r = c.cmd("UID STORE 1 +FLAGS (\\Seen)").await;
    assert!(r.is_ok(), "UID STORE: {r}");
    assert!(
        r.untagged_text().iter().any(|l| l.contains("\\Seen")),
        "UID STORE echoes flags: {r}"
    );
    let r = c.cmd("UID STORE 1 -FLAGS (\\Seen)").await;
    assert!(r.is_ok(), "UID STORE -FLAGS: {r}");
    let r = c.cmd("UID FETCH 1 (FLAGS)").await;
    assert!(
        !r.untagged_text().join("").contains("\\Seen"),
        "-FLAGS \\Seen: {r}"
    );
    // UID COPY with COPYUID (RFC 4315).
    let r = c.cmd("UID COPY 1 Trash").await;
    assert!(r.is_ok() && r.tagged.contains("[COPYUID "), "UID COPY: {r}");
    // UID MOVE (RFC 6851): the message leaves INBOX.
    let r = c.cmd("UID MOVE 2 Trash").await;
    assert!(r.is_ok(), "UID MOVE: {r}");
    let all = format!("{}\n{}", r.untagged_text().join("\n"), r.tagged);
    assert!(all.contains("COPYUID "), "UID MOVE gives COPYUID: {all}");
    assert!(
        r.untagged_text().iter().any(|l| l == "* 2 EXPUNGE"),
        "UID MOVE expunges message 2: {r}"
    );
    // \Deleted + UID EXPUNGE of one UID only.
    let r = c.cmd("UID STORE 3:4 +FLAGS.SILENT (\\Deleted)").await;
    assert!(r.is_ok(), "{r}");
    let r = c.cmd("UID EXPUNGE 3").await;
    assert!(r.is_ok(), "UID EXPUNGE: {r}");
    assert!(
        r.untagged_text().iter().any(|l| l == "* 2 EXPUNGE"),
        "UID EXPUNGE 3: {r}"
    );
    // Plain EXPUNGE removes the remaining \Deleted one (UID 4, now message 2).
    let r = c.cmd("EXPUNGE").await;
    assert!(r.is_ok(), "EXPUNGE: {r}");
    assert!(
        r.untagged_text().iter().any(|l| l == "* 2 EXPUNGE"),
        "EXPUNGE: {r}"
    );
    let r = c.cmd("UID FETCH 1:* (UID)").await;
    let uids: Vec<u32> = r.untagged_text().iter().filter_map(|l| uid_of(l)).collect();
    assert_eq!(uids, vec![1], "INBOX after MOVE/EXPUNGE: {r}");
    // APPEND with APPENDUID (RFC 4315), synchronizing literal.
    let m = encrypted_mail(&a.addr, &[&a.addr]);
    let tag = c.tag();
    c.send_raw(format!("{tag} APPEND INBOX (\\Seen) {{{}}}\r\n", m.bytes.len()).as_bytes())
        .await;
    let cont = c.read_response(&tag).await.expect("APPEND continuation");
    assert_eq!(cont.status, "+", "APPEND: expected a continuation: {cont}");
    let mut data = m.bytes.clone();
    data.extend_from_slice(b"\r\n");
    c.send_raw(&data).await;
    let r = c.read_response(&tag).await.expect("APPEND completion");
    assert!(r.is_ok() && r.tagged.contains("[APPENDUID "), "APPEND: {r}");
    let r = c.cmd("NOOP").await;
    assert!(r.is_ok(), "{r}");
    let r = c.cmd("UID FETCH 5 (FLAGS BODY.PEEK[])").await;
    let line = r
        .untagged
        .iter()
        .find(|l| l.text().contains(" FETCH ("))
        .unwrap_or_else(|| panic!("appended message as UID 5: {r}"));
    assert_eq!(
        line.literals.first(),
        Some(&m.bytes),
        "APPEND stores the bytes unchanged"
    );
    assert!(line.text().contains("\\Seen"), "APPEND flags: {line}");
    // Trash holds the copy and the moved message.
    let r = c
        .cmd(&format!("STATUS {} (MESSAGES)", quote("Trash")))
        .await;
    assert!(
        r.untagged_text().join("").contains("MESSAGES 2"),
        "Trash: {r}"
    );
    // QUOTA (RFC 9208).
    let r = c.cmd("GETQUOTAROOT INBOX").await;
    assert!(r.is_ok(), "GETQUOTAROOT: {r}");
    let root_line = r
        .untagged_text()
        .into_iter()
        .find(|l| l.starts_with("* QUOTAROOT "))
        .unwrap_or_else(|| panic!("no QUOTAROOT: {r}"));
    // `* QUOTAROOT INBOX <root>`: the root as sent (atom or quoted string).
    let root = root_line
        .strip_prefix("* QUOTAROOT INBOX ")
        .unwrap_or_else(|| panic!("QUOTAROOT line: {root_line}"))
        .to_string();
    let r = c.cmd(&format!("GETQUOTA {root}")).await;
    assert!(r.is_ok(), "GETQUOTA {root}: {r}");
    assert!(
        r.untagged_text().iter().any(|l| l.contains("STORAGE")),
        "GETQUOTA: {r}"
    );
    // CLOSE, UNSELECT-less state, LOGOUT.
    let r = c.cmd("CLOSE").await;
    assert!(r.is_ok(), "CLOSE: {r}");
    let r = c.cmd("LOGOUT").await;
    assert!(r.is_ok(), "LOGOUT: {r}");
    assert!(
        r.untagged_text().iter().any(|l| l.starts_with("* BYE")),
        "LOGOUT: {r}"
    );
}
