//! `relaybox pair-front` (issue 20): pair this relay with a front server by a one-time code
//! ([`crate::front::pair`]). Prints the one command to run on the front, tries the pairing
//! until the front answers, keeps the result in chatmail.ini (`front`, `front_pin`) and, when
//! the relay runs, has it take the link up at once (the control request
//! [`super::Request::FrontChanged`]).

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::Request;
use super::client;
use crate::config::Config;
use crate::front::link::Identity;
use crate::front::pair::{self, PairFailure};

/// Between two attempts while nothing answers yet.
const RETRY: Duration = Duration::from_secs(2);

/// What `relaybox pair-front` was given.
pub struct PairFront<'a> {
    pub config_path: &'a Path,
    pub config: &'a Config,
    /// The front's address (`host[:port]`, the tunnel port 4433 by default).
    pub front: &'a str,
    /// A code made elsewhere (the wizard's), else a new one.
    pub code: Option<String>,
    /// How long to wait for the front.
    pub wait: Duration,
}

/// 0 when paired; 1 when refused or nothing answered in time; 2 for a bad code.
pub fn run(args: PairFront<'_>) -> ExitCode {
    let code = args.code.clone().unwrap_or_else(pair::new_code);
    if let Err(e) = pair::normalize_code(&code) {
        eprintln!("relaybox: {e}");
        return ExitCode::from(2);
    }
    let result = super::block_on(pair_and_keep(&args, &code));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(message)) => {
            eprintln!("relaybox: {message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("relaybox: cannot start runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn pair_and_keep(args: &PairFront<'_>, code: &str) -> Result<(), String> {
    let dir = args.config.data_dir.join("front");
    let identity = Identity::load_or_create(&dir)
        .map_err(|e| format!("tunnel identity in {}: {e}", dir.display()))?;
    let front = pair::tunnel_address(args.front);
    let (public, port) = public_address(&front).await;
    let command = match public {
        Some(ip) => pair::front_command(ip, port, code),
        None => format!("relaybox front --public <the server's public IP> --pair {code}"),
    };
    println!("On the front server ({front}), run:\n\n    {command}\n");
    println!("Waiting for it to pair (up to {} s)…", args.wait.as_secs());
    let deadline = tokio::time::Instant::now() + args.wait;
    let pin = match pair::pair_until(&front, code, &identity, RETRY, deadline).await {
        Ok(pin) => pin,
        Err(PairFailure::Ended(e) | PairFailure::TimedOut(Some(e))) => return Err(e.to_string()),
        Err(PairFailure::TimedOut(None)) => {
            return Err(format!("nothing answered within {} s", args.wait.as_secs()));
        }
    };
    pair::save(args.config_path, &front, &pin)
        .map_err(|e| format!("paired, but chatmail.ini could not be written: {e}"))?;
    println!(
        "Paired with the front server {front} ({}).",
        crate::hex::pin_text(&pin)
    );
    match client::call_running::<bool>(args.config, Request::FrontChanged).await {
        Ok(Some(true)) => println!("The running relay uses the front now."),
        Ok(_) => println!("The relay uses the front from its next start."),
        Err(e) => println!("The relay uses the front from its next start ({e})."),
    }
    Ok(())
}

/// The front's address for its command line (a name is looked up; IPv4 first) and its
/// tunnel port.
async fn public_address(front: &str) -> (Option<IpAddr>, u16) {
    let port = pair::tunnel_port(front);
    let found: Vec<IpAddr> = match tokio::net::lookup_host(front).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(_) => Vec::new(),
    };
    (pair::preferred_address(&found), port)
}
