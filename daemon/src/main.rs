//! The `relaybox` command: run the relay (`serve`, `dev`) and its tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use relaybox::config::{Config, ConfigError, Loaded};
use relaybox::server::{self, Relay};
use relaybox::store::Store;

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
    /// Run the daily expiry now (spec relay.md §15) on the store of a stopped relay;
    /// a running relay does it itself every day at 00:02 UTC.
    Expire {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
        /// Take this Unix time (seconds, UTC) as "now" instead of the system clock.
        #[arg(long)]
        now: Option<u64>,
    },
    /// Print the DNS records this relay needs, in zone-file form (spec relay.md §18),
    /// DKIM record included (the key is made on first use).
    Dns {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write an encrypted backup of the relay (running or stopped) to one file, or show
    /// what a backup file is (--list).
    Backup {
        /// Path of the chatmail.ini file.
        #[arg(long, short, required_unless_present = "list")]
        config: Option<PathBuf>,
        /// The backup file to write (atomically).
        #[arg(long, required_unless_present = "list")]
        out: Option<PathBuf>,
        /// Read the passphrase from this file's first line (else RELAYBOX_BACKUP_PASSPHRASE,
        /// else it is asked on the terminal).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Leave the mailboxes and the outbound queue out (accounts, keys and settings stay).
        #[arg(long)]
        no_messages: bool,
        /// Print the header of this backup file (no passphrase needed) and exit.
        #[arg(long, value_name = "BACKUP", conflicts_with_all = ["config", "out", "no_messages"])]
        list: Option<PathBuf>,
    },
    /// Restore a backup into a stopped relay: the same domain, keys, certificates,
    /// accounts and messages. A relay with accounts is only replaced with --yes (or when
    /// confirmed on the terminal), after a backup of it is written.
    Restore {
        /// Path of the chatmail.ini file (rewritten with the backup's settings).
        #[arg(long, short)]
        config: PathBuf,
        /// Read the passphrase from this file's first line (else RELAYBOX_BACKUP_PASSPHRASE,
        /// else it is asked on the terminal).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Replace an existing relay without asking.
        #[arg(long)]
        yes: bool,
        /// The backup file.
        backup: PathBuf,
    },
    /// Move the running relay to another machine (README "Moving to another machine"):
    /// write its final backup and from then on forward all mail for its accounts to the
    /// new machine, until its name points there.
    Move {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
        /// The new machine's IP address (or a host name of its own).
        #[arg(long, value_name = "ADDRESS")]
        to: String,
        /// The final backup to write (atomically), to restore on the new machine.
        #[arg(long)]
        out: PathBuf,
        /// Read the passphrase from this file's first line (else RELAYBOX_BACKUP_PASSPHRASE,
        /// else it is asked on the terminal).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Serve a relay's public ports on this machine for a box behind NAT (issue 20, README
    /// "Behind NAT or CGNAT"): connections go through the tunnel the box keeps open.
    Front {
        /// Where this front keeps its tunnel certificate and the paired box.
        #[arg(long, default_value = relaybox::front::pair::FRONT_DATA_DIR)]
        data: PathBuf,
        /// The public address whose ports 25, 587, 465, 143, 993, 443 and 80 are served.
        #[arg(long, required_unless_present = "print_pin")]
        public: Option<std::net::IpAddr>,
        /// Where the box connects (default: the public address, port 4433).
        #[arg(long)]
        tunnel: Option<std::net::SocketAddr>,
        /// The box's tunnel certificate (`sha256:…`, as `relaybox tunnel-pin` prints it);
        /// not needed after a pairing (the paired box is kept in the data directory).
        #[arg(long)]
        box_pin: Option<String>,
        /// Pair with the box that shows this one-time code (its setup page or
        /// `relaybox pair-front`); a code that was used before is refused.
        #[arg(long)]
        pair: Option<String>,
        /// Also open the box's outbound SMTP connections to private addresses (a front inside
        /// a private network, tests); by default only public addresses.
        #[arg(long)]
        outbound_private: bool,
        /// Print this front's own tunnel certificate (for the box's `front_pin`) and exit.
        #[arg(long)]
        print_pin: bool,
    },
    /// Pair this relay with a front server by a one-time code (README "Behind NAT or
    /// CGNAT"): prints the command to run on the front, waits for it, keeps the result in
    /// chatmail.ini; a running relay takes the link up at once.
    PairFront {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
        /// The front server's address: `host` or `host:port` of its tunnel (port 4433).
        #[arg(long)]
        front: String,
        /// Use this code instead of a new one.
        #[arg(long)]
        code: Option<String>,
        /// Seconds to wait for the front.
        #[arg(long, default_value_t = 900)]
        wait: u64,
    },
    /// Print this box's tunnel certificate (for `relaybox front --box-pin`).
    TunnelPin {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The outbound queue by destination domain; "retry now" and "give up (bounce)" per
    /// domain, on a running or a stopped relay.
    Queue {
        /// Path of the chatmail.ini file (required; also after the subcommand).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<relaybox::control::queue_cli::QueueCommand>,
    },
    /// Write the diagnostic report (version, config without secrets, services and checks,
    /// queue, storage, recent log lines; no addresses, IP addresses or secrets) to a file:
    /// asked of the running relay, or made from the stored data when it is stopped.
    Report {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
        /// Where to write the report (`-`: standard output).
        #[arg(long)]
        out: PathBuf,
    },
    /// The relay's accounts: list, delete, block, unblock (on a running relay through its
    /// control socket, on a stopped one directly).
    Accounts {
        #[command(subcommand)]
        action: relaybox::control::cli::AccountsAction,
    },
    /// Over-the-air update bundles.
    Update {
        #[command(subcommand)]
        action: UpdateAction,
    },
    /// Reboot the machine now (root only; the image's init runs it at the end of an orderly
    /// reboot). ARG is reboot(2)'s RESTART2 argument: `0 tryboot` boots the Raspberry Pi's
    /// trial partition once.
    #[command(hide = true)]
    SystemReboot { argument: Option<String> },
    /// Run an IP-only relay on 127.0.0.1 with unprivileged ports, for development.
    Dev {
        /// Data directory (created if missing).
        #[arg(long, default_value = "relaybox-dev")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum UpdateAction {
    /// Check a bundle (signature, manifest, image hashes) without installing it; exits
    /// non-zero with the reason when it fails.
    Verify {
        /// The minisign public key file.
        #[arg(long)]
        pubkey: PathBuf,
        /// The bundle file.
        bundle: PathBuf,
    },
    /// Verify a bundle and write it into the inactive slot, then arm a one-time trial
    /// boot of that slot (needs root: it writes the slot's partitions).
    Install {
        /// The minisign public key file.
        #[arg(long)]
        pubkey: PathBuf,
        /// The bundle file.
        bundle: PathBuf,
        /// Where the update state is kept (default /var/lib/relaybox/update).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// On a trial boot: make the running slot the default (after its health check).
    Commit {
        /// Where the update state is kept (default /var/lib/relaybox/update).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

/// Exit code for a configuration error.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    relaybox::alloc::configure();
    init_logging();
    let cli = Cli::parse();
    let dev = matches!(cli.command, Command::Dev { .. });
    let (config, config_path) = match cli.command {
        Command::Serve { config: path } => match load_config_for_serve(&path) {
            Ok(c) => {
                // LOG-1: from here on logs reach stderr only when configured.
                relaybox::logs::set_stderr(c.log_stderr);
                // The wizard rewrites this file; keep it findable whatever the cwd.
                (c, Some(std::path::absolute(&path).unwrap_or(path)))
            }
            Err(code) => return code,
        },
        Command::Expire { config, now } => match load_config(&config) {
            Ok(c) => return expire(c, now),
            Err(code) => return code,
        },
        Command::Dns { config } => match load_config(&config) {
            Ok(c) => return relaybox::zone::command(&c),
            Err(code) => return code,
        },
        Command::Backup {
            list: Some(file), ..
        } => return relaybox::backup::cli::list(&file),
        Command::Backup {
            config: Some(path),
            out: Some(out),
            passphrase_file,
            no_messages,
            list: None,
        } => {
            let config = match load_config_for_serve(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let path = relaybox::backup::cli::absolute(&path);
            return relaybox::control::cli::block_on(relaybox::backup::cli::backup(
                &config,
                &path,
                &out,
                passphrase_file.as_deref(),
                !no_messages,
            ));
        }
        Command::Backup { .. } => unreachable!("clap requires --config and --out without --list"),
        Command::Front {
            data,
            public,
            tunnel,
            box_pin,
            pair,
            outbound_private,
            print_pin,
        } => {
            return front(FrontArgs {
                data,
                public,
                tunnel,
                box_pin,
                pair,
                outbound_private,
                print_pin,
            });
        }
        Command::PairFront {
            config: path,
            front,
            code,
            wait,
        } => {
            return match load_config(&path) {
                Ok(config) => {
                    relaybox::control::front_cli::run(relaybox::control::front_cli::PairFront {
                        config_path: &path,
                        config: &config,
                        front: &front,
                        code,
                        wait: std::time::Duration::from_secs(wait),
                    })
                }
                Err(code) => code,
            };
        }
        Command::TunnelPin { config } => match load_config(&config) {
            Ok(c) => {
                let dir = c.data_dir.join("front");
                return match relaybox::front::link::Identity::load_or_create(&dir) {
                    Ok(id) => {
                        println!("{}", id.fingerprint());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("relaybox: tunnel identity in {}: {e}", dir.display());
                        ExitCode::FAILURE
                    }
                };
            }
            Err(code) => return code,
        },
        Command::Move {
            config: path,
            to,
            out,
            passphrase_file,
        } => {
            let config = match load_config_for_serve(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let path = relaybox::backup::cli::absolute(&path);
            return relaybox::control::cli::block_on(relaybox::backup::cli::move_to(
                &config,
                &path,
                &to,
                &out,
                passphrase_file.as_deref(),
            ));
        }
        Command::Restore {
            config: path,
            passphrase_file,
            yes,
            backup,
        } => {
            let config = match load_config_for_serve(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let path = relaybox::backup::cli::absolute(&path);
            return relaybox::control::cli::block_on(relaybox::backup::cli::restore(
                &config,
                &path,
                &backup,
                passphrase_file.as_deref(),
                yes,
            ));
        }
        Command::Queue { config, action } => match config.as_deref().map(load_config) {
            Some(Ok(c)) => return relaybox::control::queue_cli::run(&c, action),
            Some(Err(code)) => return code,
            None => {
                eprintln!("relaybox: queue: --config FILE is required");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        Command::Report { config: path, out } => match load_config(&path) {
            Ok(c) => return report(&c, &path, &out),
            Err(code) => return code,
        },
        Command::Accounts { action } => match load_config(action.config()) {
            Ok(c) => return relaybox::control::cli::accounts(c, action),
            Err(code) => return code,
        },
        Command::Update {
            action: UpdateAction::Verify { pubkey, bundle },
        } => return relaybox::update::verify_command(&pubkey, &bundle),
        Command::Update {
            action:
                UpdateAction::Install {
                    pubkey,
                    bundle,
                    state_dir,
                },
        } => return relaybox::update::install_command(&pubkey, &bundle, state_dir.as_deref()),
        Command::Update {
            action: UpdateAction::Commit { state_dir },
        } => return relaybox::update::commit_command(state_dir.as_deref()),
        Command::SystemReboot { argument } => {
            let e = relaybox::update::boot::system_reboot(argument.as_deref());
            eprintln!("relaybox: reboot failed: {e}");
            return ExitCode::FAILURE;
        }
        Command::Dev { data_dir } => (Config::dev(data_dir), None),
    };
    // Issue 13: every connection is a descriptor; the caps are fitted to this later.
    relaybox::fdlimit::raise();
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
    runtime.block_on(async move {
        // BOOT-4: petted for the whole life of the process, setup mode included.
        let (dog_stop, dog_stopped) = tokio::sync::oneshot::channel::<()>();
        let dog = watchdog_device(&config).map(|path| {
            tokio::spawn(relaybox::watchdog::run(path, async {
                let _ = dog_stopped.await;
            }))
        });
        let code = serve(config, config_path, dev).await;
        let _ = dog_stop.send(());
        if let Some(dog) = dog {
            let _ = dog.await;
        }
        code
    })
}

/// `serve` and `dev`: setup mode until a domain is chosen, then the relay.
async fn serve(config: Config, config_path: Option<PathBuf>, dev: bool) -> ExitCode {
    let appliance = match relaybox::appliance::start(config.clone(), config_path) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("relaybox: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The command line's way in (`relaybox accounts`, `queue`, …), in setup mode too.
    let control = relaybox::control::Ctx::daemon(config.clone(), appliance.appliance.clone());
    let control_task = match relaybox::control::server::bind(&config.data_dir) {
        Ok(listener) => Some(tokio::spawn(relaybox::control::server::run(
            listener,
            control.clone(),
        ))),
        Err(e) if e.err.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("relaybox: {e}");
            appliance.stop().await;
            return ExitCode::FAILURE;
        }
        Err(e) => {
            tracing::error!("{e}; the command line cannot reach this relay while it runs");
            None
        }
    };
    let code = serve_modes(config, appliance, &control, dev).await;
    if let Some(task) = control_task {
        task.abort();
        // The listener (and with it the socket file) goes when the task is dropped.
        let _ = task.await;
    }
    code
}

/// Setup mode until a domain is chosen, then the relay.
async fn serve_modes(
    config: Config,
    appliance: relaybox::appliance::Running,
    control: &relaybox::control::Ctx,
    dev: bool,
) -> ExitCode {
    let config = if config.setup {
        // Setup mode: the wizard alone until the operator chose a domain.
        let server =
            match relaybox::appliance::setup::start(appliance.appliance.clone(), &config).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("relaybox: {e}");
                    return ExitCode::FAILURE;
                }
            };
        let mut chosen = appliance.appliance.chosen_config();
        let next = tokio::select! {
            c = chosen.wait_for(|c| c.is_some()) => c.ok().and_then(|c| c.clone()),
            _ = shutdown_signal() => None,
        };
        let Some(next) = next else {
            server.stop().await;
            tracing::info!("shutting down");
            return ExitCode::SUCCESS;
        };
        // Open the relay while the wizard still answers, then hand the port over.
        let relay = Relay::open(next.clone());
        server.stop().await;
        match relay {
            Ok(r) => return run_relay(r, appliance, control, dev, true).await,
            Err(e) => {
                eprintln!("relaybox: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        config
    };
    let relay = match Relay::open(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relaybox: {e}");
            return ExitCode::FAILURE;
        }
    };
    run_relay(relay, appliance, control, dev, false).await
}

/// Serve the relay with its services until a signal, then flush the store.
async fn run_relay(
    relay: std::sync::Arc<Relay>,
    appliance: relaybox::appliance::Running,
    control: &relaybox::control::Ctx,
    dev: bool,
    from_wizard: bool,
) -> ExitCode {
    {
        // LOG-5: the metrics endpoint's address is parsed and bound before any service
        // starts; a bad address stops the start as a config error (exit 2), a failed bind
        // as an unavailable listener address (exit 1).
        let metrics_listener = match relay.config.mtail_address.as_deref() {
            None => None,
            Some(address) => match relaybox::http::metrics::bind(address).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    tracing::error!("{e}");
                    match e {
                        relaybox::http::metrics::ServeError::Address(_) => {
                            eprintln!("relaybox: config error: {e}")
                        }
                        relaybox::http::metrics::ServeError::Bind { .. } => {
                            eprintln!("relaybox: {e}")
                        }
                    }
                    appliance.stop().await;
                    return ExitCode::from(e.exit_code());
                }
            },
        };
        appliance.appliance.attach(relay.clone());
        control.attach(relay.clone());
        if dev {
            relaybox::onboarding::print_dev_banner(&relay.config);
        }
        let store = relay.store.clone();
        // EXP-1..5: the daily expiry at 00:02 UTC, for as long as the relay runs.
        let daily = tokio::spawn({
            let relay = relay.clone();
            async move { relaybox::expire::daily(relay.expire_handles()).await }
        });
        // PUSH-2..5: the push notifier, retrying jobs left from before a restart at once.
        let notifier = tokio::spawn({
            let relay = relay.clone();
            async move { relaybox::push::run(relay.push_handles()).await }
        });
        // OUT-1..7: the outbound scheduler, resuming the queue left from before a restart.
        let outbound = tokio::spawn(relaybox::outbound::run(
            relay.clone(),
            Relay::outbound_handles,
        ));
        // RT-1: TURN for calls; LOG-5: metrics when `mtail_address` is set.
        let turn = tokio::spawn({
            let relay = relay.clone();
            async move { relaybox::turn::run(relay.turn_handles()).await }
        });
        let metrics = tokio::spawn({
            let store = relay.store.clone();
            async move {
                if let Some(listener) = metrics_listener {
                    relaybox::http::metrics::run(listener, store, relaybox::metrics::global()).await
                }
            }
        });
        // Issue 13: memory freed by closed sessions goes back to the system.
        let trim = tokio::spawn(relaybox::alloc::trim_periodically());
        // OTA-3..6 (issue 7): update checks, installs, the trial boot's health window.
        let updater = appliance.appliance.spawn_update_agent(relay.clone());
        // Issue 17: automatic backups (`backup_dir`), settings from the status page.
        let backups = appliance.appliance.start_auto_backups(&relay);
        // ACME-3: a certificate at start, renewal at two thirds of its lifetime. Right
        // after the wizard's domain step the DNS records do not exist yet: the wizard's
        // certificate step asks first, the automatic attempts (and their back-off, which
        // counts against the CA's failure limits) start once a certificate exists.
        let acme = {
            let relay = relay.clone();
            tokio::spawn(async move {
                while from_wizard && relay.acme_handles().info().source != "acme" {
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                }
                relaybox::acme::run(relay.acme_handles()).await
            })
        };
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
        daily.abort();
        notifier.abort();
        outbound.abort();
        turn.abort();
        metrics.abort();
        trim.abort();
        updater.abort();
        backups.abort();
        acme.abort();
        appliance.stop().await;
        if let Err(e) = store.flush().await {
            tracing::error!("store flush at shutdown failed: {e}");
        }
        code
    }
}

/// The `auto` values of the config, resolved with what only this machine can tell (the
/// config itself is parsed without looking at the machine): `watchdog = auto` is
/// `/dev/watchdog` on a Relaybox A/B image (the update code's boot detection), when it
/// exists.
fn watchdog_device(config: &Config) -> Option<PathBuf> {
    config.watchdog.resolve(
        || relaybox::update::boot::detect().is_some(),
        |device| device.exists(),
    )
}

/// Load a chatmail.ini, warning about unknown keys; a bad file is exit code 2.
fn load_config(path: &Path) -> Result<Config, ExitCode> {
    report_config(
        path,
        read_config(path).and_then(|text| Config::parse(&text)),
    )
}

/// As [`load_config`], but a file without `mail_domain` starts setup mode.
fn load_config_for_serve(path: &Path) -> Result<Config, ExitCode> {
    report_config(
        path,
        read_config(path).and_then(|text| Config::parse_for_serve(&text)),
    )
}

/// The text of a chatmail.ini (the config module only parses).
fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

fn report_config(path: &Path, loaded: Result<Loaded, ConfigError>) -> Result<Config, ExitCode> {
    match loaded {
        Ok(loaded) => {
            if !loaded.unknown_keys.is_empty() {
                // Also on stderr when the logs stay in memory: the operator must see it.
                if !loaded.config.log_stderr {
                    eprintln!(
                        "relaybox: {}: unknown keys ignored: {}",
                        path.display(),
                        loaded.unknown_keys.join(", ")
                    );
                }
                tracing::warn!(
                    "{}: unknown keys ignored: {}",
                    path.display(),
                    loaded.unknown_keys.join(", ")
                );
            }
            Ok(loaded.config)
        }
        Err(e) => {
            eprintln!("relaybox: config error: {}: {e}", path.display());
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// `relaybox expire`: one expiry run over the store, then a durable flush (the run's
/// message removals are not durable on their own). Prints what it removed.
fn expire(config: Config, now: Option<u64>) -> ExitCode {
    use relaybox::clock::{Clock, SystemClock};
    use relaybox::expire::{self, Detached, Rules};

    let path = config.data_dir.join(server::STORE_FILE);
    if !path.exists() {
        println!("expire: no store at {}, nothing to do", path.display());
        return ExitCode::SUCCESS;
    }
    let store = match Store::open_with_cache(&path, config.store_cache_size) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "relaybox: cannot open the store {}: {e} (a running relay expires by itself \
                 every day at 00:02 UTC)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let now = now.unwrap_or_else(|| SystemClock.unix_now());
    let rules = Rules::from_config(&config);
    relaybox::control::cli::block_on(async move {
        let result = expire::run_store(&store, &rules, now, &Detached).await;
        let flushed = store.flush().await;
        match (result, flushed) {
            (Ok(report), Ok(())) => {
                println!(
                    "expire: removed {} account(s), {} expired message(s), {} message(s) over quota",
                    report.accounts_removed, report.messages_expired, report.messages_trimmed
                );
                ExitCode::SUCCESS
            }
            (Err(e), _) => {
                eprintln!("relaybox: expire failed: {e}");
                ExitCode::FAILURE
            }
            (_, Err(e)) => {
                eprintln!("relaybox: expire: store flush failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `relaybox report`: the report through the control socket (the running relay makes it)
/// or, when the relay is stopped, from its config and store in this process.
fn report(config: &Config, config_path: &Path, out: &Path) -> ExitCode {
    let request = relaybox::control::Request::Report {
        config_file: Some(std::path::absolute(config_path).unwrap_or(config_path.into())),
    };
    relaybox::control::cli::block_on(async {
        let text: String = match relaybox::control::client::call(config, request).await {
            Ok(text) => text,
            Err(e) => {
                eprintln!("relaybox: report: {e}");
                return ExitCode::FAILURE;
            }
        };
        if out == Path::new("-") {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        match relaybox::operator::report::write(out, &text) {
            Ok(()) => {
                eprintln!("relaybox: report written to {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("relaybox: report: cannot write {}: {e}", out.display());
                ExitCode::FAILURE
            }
        }
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

/// What `relaybox front` was given.
struct FrontArgs {
    data: PathBuf,
    public: Option<std::net::IpAddr>,
    tunnel: Option<std::net::SocketAddr>,
    box_pin: Option<String>,
    pair: Option<String>,
    outbound_private: bool,
    print_pin: bool,
}

/// `relaybox front` (issue 20).
fn front(args: FrontArgs) -> ExitCode {
    use relaybox::front::server;
    let id = match server::identity(&args.data) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("relaybox: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.print_pin {
        println!("{}", id.fingerprint());
        return ExitCode::SUCCESS;
    }
    let Some(public) = args.public else {
        eprintln!("relaybox: --public is needed");
        return ExitCode::from(EXIT_CONFIG);
    };
    let box_pin = match args
        .box_pin
        .as_deref()
        .map(relaybox::hex::parse_pin)
        .transpose()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("relaybox: --box-pin: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cfg = server::FrontConfig {
        data_dir: args.data,
        public,
        ports: relaybox::front::PORTS.to_vec(),
        tunnel: args.tunnel.unwrap_or(std::net::SocketAddr::new(
            public,
            relaybox::front::pair::DEFAULT_TUNNEL_PORT,
        )),
        box_pin,
        pair_code: args.pair,
        outbound_private: args.outbound_private,
    };
    tracing::info!(
        "front: this front's tunnel certificate is {}",
        id.fingerprint()
    );
    let result = relaybox::control::block_on(server::run(cfg, id));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("relaybox: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("relaybox: cannot start runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// LOG-1: log lines go to the in-memory ring from the first line on. `serve` holds
/// them from stderr until its config says `log_stderr` (applied when the relay starts,
/// `relaybox::logs::set_stderr`); the tools (`expire`, `dns`) and `dev` write to stderr
/// at once. `RELAYBOX_LOG` is the filter.
fn init_logging() {
    use relaybox::logs::Stderr;
    let serve = std::env::args_os().nth(1).is_some_and(|a| a == "serve");
    relaybox::logs::init(if serve { Stderr::Pending } else { Stderr::On });
}
