//! Upstream parity (issue 18 item 1): the IMAP METADATA entries
//! `/shared/vendor/deltachat/appversions` (the built-in document, replaced by
//! `<data_dir>/appversions.json` when that file is valid) and `/shared/comment` (the
//! `server_comment` key), against the real binary.

use std::time::Duration;

use relaybox_blackbox::{Account, Imap, Relay, create_account};

const APPVERSIONS: &str = "/shared/vendor/deltachat/appversions";
const COMMENT: &str = "/shared/comment";

/// The value of one server entry (None for NIL).
async fn entry(relay: &Relay, account: &Account, key: &str) -> Option<String> {
    let mut c = Imap::login_tls(relay, account).await;
    let r = c.cmd(&format!("GETMETADATA \"\" ({key})")).await;
    assert!(r.is_ok(), "GETMETADATA: {r}");
    assert_eq!(r.untagged.len(), 1, "one METADATA line: {r}");
    let line = r.untagged[0].clone();
    c.logout().await;
    match line.literals.as_slice() {
        [] => {
            assert_eq!(line.text(), format!("* METADATA \"\" ({key} NIL)"));
            None
        }
        [value] => Some(String::from_utf8(value.clone()).expect("UTF-8 value")),
        more => panic!("more than one literal: {more:?}"),
    }
}

/// The upstream schema's rules (chatmaild `read_appversions`, core `AppVersionInfo`):
/// one compact line of JSON, `clients[]` with `clientId` and `sources[]`, each source
/// with `sourceId`, an unsigned `versionInteger`, `versionString`, `downloadUrl`.
fn check_schema(value: &str) -> serde_json::Value {
    assert!(!value.contains('\n'), "one line: {value:?}");
    let doc: serde_json::Value = serde_json::from_str(value).expect("JSON");
    let clients = doc["clients"].as_array().expect("clients array");
    for c in clients {
        assert!(c["clientId"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
        for s in c["sources"].as_array().expect("sources array") {
            assert!(s["sourceId"].as_str().is_some_and(|v| !v.is_empty()), "{s}");
            assert!(
                s["versionInteger"]
                    .as_u64()
                    .is_some_and(|v| v <= u32::MAX as u64),
                "{s}"
            );
            assert!(
                s["versionString"].as_str().is_some_and(|v| !v.is_empty()),
                "{s}"
            );
            assert!(
                s["downloadUrl"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("https://")),
                "{s}"
            );
        }
    }
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appversions_built_in_file_and_bad_file() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;

    // The built-in document.
    let v = entry(&relay, &a, APPVERSIONS)
        .await
        .expect("built-in served");
    let doc = check_schema(&v);
    assert_eq!(doc["clients"][0]["clientId"], "deltachat", "{v}");
    let built_in = v;

    // A valid file in the data directory replaces it (no restart), pretty-printed in
    // the file, compact on the wire.
    let file = relay.data_dir().join("appversions.json");
    std::fs::write(
        &file,
        "{\n  \"clients\": [\n    {\n      \"clientId\": \"deltachat\",\n      \"sources\": [\n        {\n          \"sourceId\": \"fdroid\",\n          \"versionInteger\": 4242,\n          \"versionString\": \"4.2\",\n          \"downloadUrl\": \"https://example.org/dc-4.2.apk\"\n        }\n      ]\n    }\n  ]\n}\n",
    )
    .unwrap();
    let v = entry(&relay, &a, APPVERSIONS).await.expect("file served");
    let doc = check_schema(&v);
    assert_eq!(
        doc["clients"][0]["sources"][0]["versionInteger"], 4242,
        "{v}"
    );
    assert_eq!(doc["clients"][0]["sources"][0]["sourceId"], "fdroid", "{v}");

    // A bad file: a clear log line, and the built-in is served.
    std::fs::write(
        &file,
        r#"{"clients":[{"clientId":"deltachat","sources":[{"sourceId":"gplay","versionInteger":"new","versionString":"9","downloadUrl":"https://x.example"}]}]}"#,
    )
    .unwrap();
    let v = entry(&relay, &a, APPVERSIONS)
        .await
        .expect("built-in served");
    assert_eq!(v, built_in, "bad file: the built-in document");
    let line = relay
        .wait_stderr(Duration::from_secs(5), |l| {
            l.contains("appversions file ignored, serving the built-in document")
        })
        .await
        .unwrap_or_else(|| panic!("no log line:\n{}", relay.stderr()));
    assert!(
        line.contains("versionInteger"),
        "the log names the field:\n{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_from_the_config_key() {
    let relay = Relay::start(&["server_comment = Relay of the chess club"]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    assert_eq!(
        entry(&relay, &a, COMMENT).await.as_deref(),
        Some("Relay of the chess club")
    );
    // Unset: NIL.
    let relay = Relay::start(&[]).await;
    let b = Account::random();
    create_account(&relay, &b).await;
    assert_eq!(entry(&relay, &b, COMMENT).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_with_a_control_character_stops_the_start() {
    let exited =
        Relay::run_expecting_exit(&["server_comment = a\u{7}b"], Duration::from_secs(20)).await;
    let text = &exited.stderr;
    assert!(
        exited.status.is_some_and(|s| !s.success()),
        "exits with failure: {text}"
    );
    assert!(
        text.contains("server_comment"),
        "the error names the key: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_reported_at_start() {
    let mut relay = Relay::start(&[]).await;
    std::fs::write(
        relay.data_dir().join("appversions.json"),
        "{\"clients\": 3}",
    )
    .unwrap();
    let before = relay.stderr().matches("appversions file ignored").count();
    assert_eq!(before, 0, "nobody asked yet");
    // No client asks: the start alone reports it.
    relay.restart().await;
    let line = relay
        .wait_stderr(Duration::from_secs(5), |l| {
            l.contains("appversions file ignored")
        })
        .await
        .unwrap_or_else(|| panic!("no log line:\n{}", relay.stderr()));
    assert!(line.contains("clients must be an array"), "{line}");
}
