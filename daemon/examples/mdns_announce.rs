//! Test helper for `tests/blackbox/tests/mdns.rs`: runs
//! [`relaybox::appliance::mdns::announce`] until stdin says `stop` (or closes), then
//! shuts the announcer down (goodbye packets) and exits 0.
//!
//! Usage: `mdns_announce NAME PORT`. Prints `announcing HOST` on stdout once the
//! announcer runs and `stopped` after the shutdown; logs go to stderr.

use std::io::BufRead;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RELAYBOX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(port)) = (args.next(), args.next()) else {
        return Err("usage: mdns_announce NAME PORT".into());
    };
    let announcer = relaybox::appliance::mdns::announce(&name, port.parse()?)?;
    println!("announcing {}", announcer.hostname());
    for line in std::io::stdin().lock().lines() {
        if line?.trim() == "stop" {
            break;
        }
    }
    announcer.shutdown()?;
    println!("stopped");
    Ok(())
}
