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
        return Err("an IP-only relay cannot move: its addresses (name@[IP]) name this \
                    machine's IP address. Move that address to the new machine instead."
            .into());
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
            let view = relay
                .store
                .view()
                .map_err(|e| format!("the store: {e}"))?;
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
