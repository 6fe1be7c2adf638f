//! Setup mode: a config without `mail_domain` starts only the wizard, on the HTTP
//! listeners (port 80), until the operator has chosen a domain; then `main` opens the
//! relay and stops this server: its listeners and its connections, kept-alive ones
//! included (issue 16), so every request after the switch gets the relay's answer. Also
//! the one-time setup code that proves presence on boxes without a button.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Appliance;
use crate::config::Config;
use crate::net::Conn;
use crate::server::StartError;

/// Letters and digits without look-alikes (0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// 12 characters from 31: ~59 bits.
const CODE_LEN: usize = 12;

/// The setup code in `path`: kept from an earlier start while the box is unclaimed, or
/// made now (`XXXX-XXXX-XXXX`) and written there, readable by root only.
pub fn setup_code(path: &Path) -> std::io::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let code = existing.trim();
        let plain: String = code.chars().filter(|c| *c != '-').collect();
        if plain.len() == CODE_LEN && plain.bytes().all(|b| CODE_ALPHABET.contains(&b)) {
            return Ok(code.to_string());
        }
    }
    let code: String = (0..CODE_LEN)
        .map(|i| {
            let c = CODE_ALPHABET[rand::random_range(0..CODE_ALPHABET.len())] as char;
            if i > 0 && i % 4 == 0 {
                format!("-{c}")
            } else {
                c.to_string()
            }
        })
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    super::state::write_atomically(path, format!("{code}\n").as_bytes(), 0o600)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(code)
}

/// The wizard alone, for setup mode: the admin pages plus a redirect of every other
/// path to `/admin/`.
pub fn router(appliance: Arc<Appliance>) -> Router {
    appliance.admin_router().fallback(to_wizard)
}

async fn to_wizard() -> Response {
    Redirect::to("/admin/").into_response()
}

/// The running setup server.
pub struct SetupServer {
    tasks: Vec<JoinHandle<()>>,
    /// Dropped at [`SetupServer::stop`]: every connection of setup mode then ends (the
    /// response in progress is finished with `Connection: close`, idle ones close).
    connections: watch::Sender<()>,
}

impl SetupServer {
    /// Close the listeners (awaited, so the relay can bind the same addresses) and end
    /// the connections they accepted: a connection kept alive across the switch would
    /// otherwise keep getting the wizard's answers (`crate::http::serve_router`).
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        drop(self.connections);
    }
}

/// Bind the HTTP listeners and serve the wizard on them.
pub async fn start(appliance: Arc<Appliance>, config: &Config) -> Result<SetupServer, StartError> {
    let router = router(appliance);
    let (connections, ended) = watch::channel(());
    let mut tasks = Vec::new();
    for addr in &config.listen.http {
        let listener = crate::net::bind(*addr).map_err(|err| StartError::Bind {
            addr: *addr,
            service: "setup wizard",
            err,
        })?;
        tracing::info!("setup wizard on http://{addr}/");
        let router = router.clone();
        let ended = ended.clone();
        tasks.push(tokio::spawn(async move {
            // Issue 13: failed accepts (EMFILE, …) back off and are logged once.
            let mut trouble = crate::server::AcceptTrouble::default();
            let service = crate::server::Service::Http;
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => {
                        trouble.recovered(service);
                        x
                    }
                    Err(e) => {
                        tokio::time::sleep(trouble.failed(service, &e)).await;
                        continue;
                    }
                };
                let app = with_client(router.clone(), peer);
                tokio::spawn(crate::http::serve_router(
                    app,
                    Conn::Plain(stream),
                    ended.clone(),
                ));
            }
        }));
    }
    Ok(SetupServer { tasks, connections })
}

fn with_client(router: Router, peer: SocketAddr) -> Router {
    crate::http::with_admin(router, None, peer, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_code_is_kept_until_replaced_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/setup-code");
        let code = setup_code(&path).unwrap();
        assert_eq!(code.len(), 14, "{code}");
        assert_eq!(code.as_bytes()[4], b'-');
        assert_eq!(setup_code(&path).unwrap(), code, "kept across starts");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "garbage").unwrap();
        let fresh = setup_code(&path).unwrap();
        assert_ne!(fresh, "garbage");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), fresh);
    }
}
