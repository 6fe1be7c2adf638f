//! `relaybox queue`: the outbound queue by destination domain, "retry now" and "give up
//! (bounce)" per domain, on a running relay (through the control socket) or a stopped one
//! ([`super::client::call`]). This module parses the subcommand and prints the answers;
//! the work is [`crate::operator::queue`].

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use super::Request;
use super::client::{self, CallError};
use crate::config::Config;
use crate::operator::queue::{QueueAction, QueueList, age};

/// What `relaybox queue` does (without one: `list`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueCommand {
    /// The waiting messages by destination domain: how many, attempts, next retry, age of
    /// the oldest, the last error.
    List,
    /// Try the messages for DOMAIN now (a stopped relay tries them when it starts).
    Retry {
        /// The destination domain, as `relaybox queue` lists it.
        domain: String,
    },
    /// Give up on the messages for DOMAIN: they leave the queue and each sender gets a
    /// bounce. Asks first on a terminal.
    Bounce {
        /// The destination domain, as `relaybox queue` lists it.
        domain: String,
        /// Do not ask (needed when not run on a terminal).
        #[arg(long)]
        yes: bool,
    },
}

/// Run `relaybox queue` for the relay of `config`: 0 when done, 1 when refused.
pub fn run(config: &Config, command: Option<QueueCommand>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relaybox: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command.unwrap_or(QueueCommand::List) {
            QueueCommand::List => {
                let list: QueueList = client::call(config, Request::QueueList).await?;
                print!("{}", table(&list));
                Ok(())
            }
            QueueCommand::Retry { domain } => {
                let done: QueueAction =
                    client::call(config, Request::QueueRetry { domain }).await?;
                let when = if done.relay_running {
                    "the relay tries them now"
                } else {
                    "the relay tries them when it starts"
                };
                println!(
                    "retry now: {} message(s) for {}; {when}",
                    done.messages, done.domain
                );
                Ok(())
            }
            QueueCommand::Bounce { domain, yes } => {
                if !yes && !std::io::stdin().is_terminal() {
                    return Err(CallError::Refused(
                        "not asking without a terminal: add --yes to give up and bounce".into(),
                    ));
                }
                if !yes {
                    // What would be given up, before asking (an unknown domain ends here).
                    let list: QueueList = client::call(config, Request::QueueList).await?;
                    let wanted = domain.trim().trim_end_matches('.').to_ascii_lowercase();
                    let Some(entry) = list.domains.iter().find(|d| d.domain == wanted) else {
                        return Err(CallError::Refused(format!(
                            "no mail for {wanted} is waiting in the queue (see `relaybox \
                             queue` for the domains)"
                        )));
                    };
                    if !confirm(entry.messages, &entry.domain)? {
                        println!("nothing changed");
                        return Ok(());
                    }
                }
                let done: QueueAction =
                    client::call(config, Request::QueueBounce { domain }).await?;
                println!(
                    "gave up: {} message(s) for {} removed from the queue; their senders get \
                     a bounce",
                    done.messages, done.domain
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relaybox: queue: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ask on the terminal whether to give up.
fn confirm(messages: u64, domain: &str) -> Result<bool, CallError> {
    print!("Give up on {messages} message(s) for {domain} and send each sender a bounce? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CallError::Refused(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

/// The queue as a table, or a line saying it is empty.
pub fn table(list: &QueueList) -> String {
    if list.domains.is_empty() {
        return "No mail is waiting to leave.\n".into();
    }
    let head = [
        "DOMAIN",
        "WAITING",
        "ATTEMPTS",
        "NEXT RETRY",
        "OLDEST",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 6]> = list
        .domains
        .iter()
        .map(|d| {
            [
                d.domain.clone(),
                d.messages.to_string(),
                d.attempts.to_string(),
                if d.next_retry <= list.now {
                    "now".to_string()
                } else {
                    format!("in {}", age(d.next_retry - list.now))
                },
                age(list.now.saturating_sub(d.oldest)),
                if d.last_error.is_empty() {
                    "-".to_string()
                } else {
                    d.last_error.clone()
                },
            ]
        })
        .collect();
    let mut width = head.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out += cell;
            } else {
                out += &format!("{cell:<w$}  ", w = width[i]);
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&head.map(String::from));
    for r in &rows {
        out += &line(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::queue::DomainQueue;

    #[test]
    fn the_table_names_each_domain_with_its_figures() {
        let list = QueueList {
            now: 10_000,
            domains: vec![
                DomainQueue {
                    domain: "slow.example".into(),
                    messages: 3,
                    attempts: 7,
                    next_retry: 10_000 + 1800,
                    oldest: 10_000 - 7200,
                    last_error: "connection refused".into(),
                },
                DomainQueue {
                    domain: "new.example".into(),
                    messages: 1,
                    attempts: 0,
                    next_retry: 9_990,
                    oldest: 9_990,
                    last_error: String::new(),
                },
            ],
        };
        let text = table(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("DOMAIN"), "{text}");
        let cells: Vec<&str> = lines[1]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            [
                "slow.example",
                "3",
                "7",
                "in 30 min",
                "2 h",
                "connection refused"
            ],
            "{text}"
        );
        assert!(
            lines[2].contains("now") && lines[2].ends_with('-'),
            "{text}"
        );
        let empty = QueueList {
            now: 1,
            domains: Vec::new(),
        };
        assert_eq!(table(&empty), "No mail is waiting to leave.\n");
    }
}
