//! Start-up with good and bad configs (spec/relay.md §3, CFG-4): a bad value stops
//! `relaybox serve` with exit code 2 and a message naming the key; unknown keys are
//! warned about and start-up continues.

use std::time::Duration;

use relaybox_blackbox::{Imap, Relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_value_exits_2_naming_the_key() {
    for (line, key) in [
        ("max_mailbox_size = lots", "max_mailbox_size"),
        ("max_message_size = huge", "max_message_size"),
        (
            "max_user_send_per_minute = many",
            "max_user_send_per_minute",
        ),
    ] {
        let out = Relay::run_expecting_exit(&[line], Duration::from_secs(15)).await;
        let status = out.status.unwrap_or_else(|| {
            panic!(
                "`{line}`: relaybox still running after 15 s; stderr:\n{}",
                out.stderr
            )
        });
        assert_eq!(
            status.code(),
            Some(2),
            "`{line}`: exit status {status}; stderr:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(key),
            "`{line}`: the error does not name {key}; stderr:\n{}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_warned_and_startup_continues() {
    let relay = Relay::start(&[
        "frobnicate_level = 3",
        // Upstream plumbing keys: accepted without warning (§3 table).
        "filtermail_smtp_port = 10080",
        "postfix_reinject_port = 10025",
    ])
    .await;
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    let g = c.greeting().await;
    assert!(g.raw.starts_with(b"* OK"), "relay serves: {g}");
    c.logout().await;
    let stderr = relay.stderr();
    let warning = stderr
        .lines()
        .find(|l| l.contains("frobnicate_level"))
        .unwrap_or_else(|| panic!("CFG-4: no warning naming frobnicate_level; stderr:\n{stderr}"));
    assert!(
        warning.to_ascii_uppercase().contains("WARN"),
        "CFG-4: the line naming the key is not a warning: {warning}"
    );
    assert!(
        !stderr.contains("filtermail_smtp_port") && !stderr.contains("postfix_reinject_port"),
        "§3: upstream plumbing keys are accepted without warning; stderr:\n{stderr}"
    );
}
