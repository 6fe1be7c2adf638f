//! `relaybox dns`: the DNS records this relay needs, in zone-file form (spec/relay.md
//! §18), DKIM record included.
//!
//! CONTRACT (the lead's skeleton; the DKIM owner fills it in).

use std::process::ExitCode;

use crate::config::Config;

/// Print the records of `config`'s relay on stdout; the exit code for `main`.
pub fn command(config: &Config) -> ExitCode {
    let _ = config;
    eprintln!("relaybox dns: not built yet");
    ExitCode::FAILURE
}
