//! Moving the relay to another machine (issue 17 item 4, `relaybox move`): the switch on
//! the running relay. The checks, then inside the moving gate ([`crate::moving`]) the final
//! snapshot's view of the store and `moved_to` written to chatmail.ini (so a restart goes on
//! forwarding), then every IMAP session ended. From then on the relay stores nothing: mail
//! for its accounts is queued for the new machine (`delivery`, `outbound`), logins and
//! account creation are refused with a temporary answer.

use std::path::Path;

use crate::config::Mode;
use crate::server::Relay;
use crate::store::snapshot::View;

/// Switch the running `relay` (its config file `config_file`) to moving to `to` (the new
/// machine's IP address or host name). The view is the final backup's store: every message
/// acknowledged before is in it, every one after is forwarded.
pub async fn start(relay: &Relay, config_file: Option<&Path>, to: &str) -> Result<View, String> {
    let config = &relay.config;
    if !matches!(config.mode, Mode::Domain) {
        return Err(
            "an IP-only relay cannot move: its addresses (name@[IP]) name this \
                    machine's IP address. Move that address to the new machine instead."
                .into(),
        );
    }
    let to = crate::moving::parse_target(to)?;
    if to.is_empty() {
        return Err("name the new machine: --to ADDRESS (its IP address or host name)".into());
    }
    if to.eq_ignore_ascii_case(&config.mail_domain) {
        return Err(format!(
            "{to} is the relay's own name, which points here until the move is done: give \
             the new machine's own address (its IP address or another host name)"
        ));
    }
    if let Some(already) = relay.moving.target() {
        return Err(format!(
            "this relay is already moving to {already}; its final backup was taken then"
        ));
    }
    let Some(path) = config_file else {
        return Err("this relay runs without a config file (dev mode): it cannot move".into());
    };
    let view = relay
        .moving
        .switch(&to, || {
            let view = relay.store.view().map_err(|e| format!("the store: {e}"))?;
            crate::config::write_params(path, &[("moved_to", Some(&to))])
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok::<_, String>(view)
        })
        .await?;
    relay.events.end_all_sessions();
    // Mail queued before the switch for other domains goes on as before; what comes now
    // for this domain goes to the new machine.
    relay.outbound_wake.notify_one();
    tracing::warn!(
        "moving to {to}: mail for this relay's accounts is forwarded there from now on; \
         logins are refused here"
    );
    Ok(view)
}

/// What the status page says of a relay that moves (none when it does not): where to,
/// and how many messages it still has to hand over or deliver (its whole queue: what was
/// queued for other domains at the move stays here and is delivered from here).
pub fn status_line(relay: &Relay) -> Option<String> {
    let to = relay.moving.target()?;
    let waiting = relay.store.queue_len().unwrap_or(0);
    Some(format!(
        "moving to {to}: {waiting} message(s) still to hand over or deliver; stop this relay \
         once none are left and the domain's DNS records point there"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(from: &str) -> crate::message::Parsed {
        crate::message::Parsed::legacy(
            format!("From: <{from}>\r\nSubject: [...]\r\n\r\nx\r\n").into(),
        )
    }

    /// The switch: refused where it cannot work, then `moved_to` written, local mail queued
    /// for the new machine (none stored), and the status line counting it.
    #[tokio::test]
    async fn the_switch_and_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let ini = dir.path().join("chatmail.ini");
        std::fs::write(&ini, "[params]\nmail_domain = mv.example\n").unwrap();
        let config = crate::testing::config(&dir.path().join("relay"), "mv.example");
        let relay = Relay::open(config).unwrap();
        relay
            .store
            .create_account("a@mv.example", "h", 1)
            .await
            .unwrap();
        assert_eq!(status_line(&relay), None);
        for (to, why) in [
            ("", "name the new machine"),
            ("mv.example", "own name"),
            ("a b", "IP address or host name"),
        ] {
            let e = start(&relay, Some(&ini), to).await.err().unwrap();
            assert!(e.contains(why), "{to:?}: {e}");
        }
        assert!(start(&relay, None, "192.0.2.9").await.is_err());
        assert!(!relay.moving.is_moving(), "a refused move changed nothing");

        let view = start(&relay, Some(&ini), "192.0.2.9").await.unwrap();
        let mut snapshot = Vec::new();
        view.export(true, &mut snapshot).unwrap();
        assert!(!snapshot.is_empty());
        let text = std::fs::read_to_string(&ini).unwrap();
        assert!(text.contains("moved_to = 192.0.2.9"), "{text}");
        let again = start(&relay, Some(&ini), "192.0.2.9").await.err().unwrap();
        assert!(again.contains("already moving"), "{again}");

        let reply = crate::delivery::store(
            &relay.delivery(),
            "b@other.example".into(),
            vec!["a@mv.example".into()],
            Vec::new(),
            message("b@other.example"),
        )
        .await;
        assert_eq!(reply.code, 250);
        let (_, inbox) = relay.store.messages("a@mv.example", "INBOX").unwrap();
        assert!(inbox.is_empty(), "a moving relay stores nothing");
        let line = status_line(&relay).unwrap();
        assert!(
            line.starts_with("moving to 192.0.2.9: 1 message(s) still to hand over or deliver"),
            "{line}"
        );
        // A new account is refused meanwhile (a temporary refusal).
        let refusal = relay.auth.creation_refusal().unwrap();
        assert!(refusal.is_temporary());
    }

    #[tokio::test]
    async fn an_ip_only_relay_does_not_move() {
        let dir = tempfile::tempdir().unwrap();
        let ini = dir.path().join("chatmail.ini");
        std::fs::write(&ini, "[params]\nmail_domain = 127.0.0.1\n").unwrap();
        let relay = Relay::open(crate::testing::config(
            &dir.path().join("relay"),
            "127.0.0.1",
        ))
        .unwrap();
        let e = start(&relay, Some(&ini), "192.0.2.9").await.err().unwrap();
        assert!(e.contains("IP-only"), "{e}");
    }
}
