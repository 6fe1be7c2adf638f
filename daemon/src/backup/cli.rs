//! `relaybox backup`, `relaybox restore` and `relaybox move`: arguments, the passphrase (a file, the
//! environment, or asked on the terminal), the confirmation, and what is printed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use age::secrecy::SecretString;

use super::{BackupError, Header};
use crate::config::Config;

/// Environment variable with the passphrase, for scripts.
pub const PASSPHRASE_ENV: &str = "RELAYBOX_BACKUP_PASSPHRASE";

/// Where the passphrase comes from: the file's first line, else [`PASSPHRASE_ENV`], else
/// the terminal (twice when a backup is made, so a typo does not lock the backup away).
fn passphrase(file: Option<&Path>, twice: bool) -> Result<SecretString, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("passphrase file {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("");
        return Ok(SecretString::from(line.to_string()));
    }
    if let Ok(value) = std::env::var(PASSPHRASE_ENV) {
        return Ok(SecretString::from(value));
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "no passphrase: give --passphrase-file PATH or set {PASSPHRASE_ENV}"
        ));
    }
    let first = rpassword::prompt_password("Backup passphrase: ").map_err(|e| e.to_string())?;
    if twice {
        let again = rpassword::prompt_password("The same again: ").map_err(|e| e.to_string())?;
        if again != first {
            return Err("the two passphrases differ; nothing was written".into());
        }
    }
    Ok(SecretString::from(first))
}

fn now() -> u64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.unix_now()
}

fn date(secs: u64) -> String {
    let (y, m, d) = crate::clock::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn describe(h: &Header) -> String {
    format!(
        "Relaybox backup (format {})\n  mail domain:   {}\n  made:          {}\n  made by:       Relaybox {}\n  messages:      {}\n",
        h.format,
        if h.mail_domain.is_empty() {
            "(none: made in setup mode)"
        } else {
            &h.mail_domain
        },
        date(h.created),
        h.relay_version,
        if h.messages {
            "inside (mailboxes and outbound queue)"
        } else {
            "left out (--no-messages)"
        }
    )
}

/// `relaybox backup --list FILE`.
pub fn list(path: &Path) -> ExitCode {
    match super::list(path) {
        Ok(h) => {
            print!("{}", describe(&h));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relaybox: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// `relaybox backup --config FILE --out BACKUP`.
pub async fn backup(
    config: &Config,
    config_path: &Path,
    out: &Path,
    passphrase_file: Option<&Path>,
    messages: bool,
) -> ExitCode {
    let passphrase = match passphrase(passphrase_file, true) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("relaybox: {e}");
            return ExitCode::FAILURE;
        }
    };
    match super::make(config, config_path, out, &passphrase, messages, now()).await {
        Ok(made) => {
            let store = match made.store {
                Some(c) => format!("{} store rows", c.rows),
                None => "no store yet".into(),
            };
            println!(
                "backup written to {} ({} bytes: {} files, {store})",
                out.display(),
                made.bytes,
                made.files
            );
            print!("{}", describe(&made.header));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relaybox: backup failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `relaybox move --config FILE --to ADDRESS --out BACKUP` (issue 17 item 4): the final
/// backup, taken as the running relay switches to forwarding, and what to do next.
pub async fn move_to(
    config: &Config,
    config_path: &Path,
    to: &str,
    out: &Path,
    passphrase_file: Option<&Path>,
) -> ExitCode {
    let passphrase = match passphrase(passphrase_file, true) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("relaybox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source = super::SnapshotSource::Move(to);
    match super::make_from(config, config_path, out, &passphrase, true, now(), source).await {
        Ok(made) => {
            println!(
                "{} now forwards all mail for its accounts to {to}; its IMAP clients are told \
                 to come back later.\nfinal backup written to {} ({} bytes)\n\nNext:\n  \
                 1. copy {} to the new machine and run there:\n       relaybox restore \
                 --config /etc/relaybox/chatmail.ini BACKUP\n     then start the relay there \
                 (it needs the same ports open as here);\n  2. point the DNS records of {} \
                 (A/AAAA, and the MX target) at {to};\n  3. keep this relay running until \
                 `relaybox queue --config {}` lists nothing for {} and the TTL of the old \
                 records has passed; then stop it.",
                config.mail_domain,
                out.display(),
                made.bytes,
                out.display(),
                config.mail_domain,
                config_path.display(),
                config.mail_domain,
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relaybox: move failed: {e}");
            if std::fs::read_to_string(config_path).is_ok_and(|t| {
                crate::config::Config::parse(&t).is_ok_and(|l| !l.config.moved_to.is_empty())
            }) {
                eprintln!(
                    "relaybox: the relay forwards to the new machine already, but its final \
                     backup was not written. Do not use an older backup. To try again: stop \
                     the relay, remove the line `moved_to` from {}, start it (mail that came \
                     meanwhile is delivered here) and run `relaybox move` again.",
                    config_path.display()
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// `relaybox restore --config FILE BACKUP`.
pub async fn restore(
    config: &Config,
    config_path: &Path,
    backup: &Path,
    passphrase_file: Option<&Path>,
    yes: bool,
) -> ExitCode {
    let passphrase = match passphrase(passphrase_file, false) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("relaybox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut confirmed = yes;
    loop {
        match super::restore(config, config_path, backup, &passphrase, confirmed, now()).await {
            Ok(r) => {
                println!(
                    "restored {}: {} account(s), {} file(s); start the relay now",
                    if r.header.mail_domain.is_empty() {
                        "a relay in setup mode"
                    } else {
                        &r.header.mail_domain
                    },
                    r.accounts,
                    r.files
                );
                if let Some(kept) = r.replaced_backup {
                    println!(
                        "what it replaced is kept in {} (same passphrase)",
                        kept.display()
                    );
                }
                return ExitCode::SUCCESS;
            }
            Err(BackupError::NeedsConfirmation { what })
                if !confirmed && std::io::stdin().is_terminal() =>
            {
                println!(
                    "This relay already has {what}. Restoring replaces it (a backup of it is \
                     written first). Type yes to go on:"
                );
                let mut answer = String::new();
                if std::io::stdin().read_line(&mut answer).is_err() || answer.trim() != "yes" {
                    eprintln!("relaybox: nothing was changed");
                    return ExitCode::FAILURE;
                }
                confirmed = true;
            }
            Err(e) => {
                eprintln!("relaybox: restore failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// The config file's path as given, made absolute.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
