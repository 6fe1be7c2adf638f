//! The `relaybox` command: run the relay (`serve`, `dev`) and its tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use relaybox::config::Config;
use relaybox::server::{self, Relay};

#[derive(Parser)]
#[command(name = "relaybox", version, about = "A chatmail relay in one daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay with a chatmail.ini config file.
    Serve {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run an IP-only relay on 127.0.0.1 with unprivileged ports, for development.
    Dev {
        /// Data directory (created if missing).
        #[arg(long, default_value = "relaybox-dev")]
        data_dir: PathBuf,
    },
}

/// Exit code for a configuration error.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let config = match cli.command {
        Command::Serve { config } => match Config::load(&config) {
            Ok(loaded) => {
                if !loaded.unknown_keys.is_empty() {
                    tracing::warn!(
                        "{}: unknown keys ignored: {}",
                        config.display(),
                        loaded.unknown_keys.join(", ")
                    );
                }
                loaded.config
            }
            Err(e) => {
                eprintln!("relaybox: config error: {}: {e}", config.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        Command::Dev { data_dir } => Config::dev(data_dir),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relaybox: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dev = matches!(config.listen.imaps.first(), Some(a) if a.port() != 993);
    runtime.block_on(async move {
        let relay = match Relay::open(config) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("relaybox: {e}");
                return ExitCode::FAILURE;
            }
        };
        if dev {
            relaybox::onboarding::print_dev_banner(&relay);
        }
        let store = relay.store.clone();
        let code = tokio::select! {
            r = server::serve(relay) => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("relaybox: {e}");
                    ExitCode::FAILURE
                }
            },
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                ExitCode::SUCCESS
            }
        };
        if let Err(e) = store.flush().await {
            tracing::error!("store flush at shutdown failed: {e}");
        }
        code
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RELAYBOX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
