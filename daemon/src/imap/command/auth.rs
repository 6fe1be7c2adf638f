//! The not-authenticated state (RFC 9051 §6.2): STARTTLS, LOGIN and AUTHENTICATE PLAIN
//! (RFC 4616) with SASL-IR (RFC 4959). Passwords only over TLS (ACC-1); the login brake
//! and account creation are `crate::auth`'s.

use base64::Engine as _;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::CommandBody;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::{AuthError, CreationRefusal};
use crate::imap::encode::{Reply, Rfc5530, capability_code};
use crate::imap::session::{Fail, Flow, PREAUTH_TIMEOUT, Session};
use crate::imap::wire::WireError;

/// Failed logins on one connection before it is closed.
const MAX_FAILED_LOGINS: u32 = 3;

/// ACC-1, RFC 9051 §6.2.3: no passwords in the clear.
fn privacy_required() -> Reply {
    Reply::no("Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
        .code(Rfc5530::PrivacyRequired)
}

/// An unknown name that would have been created at this login, had creation not been
/// refused (spec/relay.md ACC-5): say so, not "authentication failed", so the client
/// tells its user why (Delta Chat shows this text in its configure error). Not a failed
/// login: the password was not checked, and the connection is not closed for it.
fn creation_refused(refusal: &CreationRefusal) -> Reply {
    let reply = Reply::no(refusal.user_text());
    if refusal.is_temporary() {
        // RFC 5530 §3 UNAVAILABLE: "Temporary failure because a subsystem is down" —
        // here the system limits (load, memory, disk); the same login may succeed later.
        reply.code(Rfc5530::Unavailable)
    } else {
        // RFC 5530 §3 CONTACTADMIN: "The user should contact the system administrator
        // or support desk." The owner turned sign-up off (CFG-6): retrying will not help
        // (so not UNAVAILABLE), nor another password (not AUTHENTICATIONFAILED), and only
        // the owner can change it (so not CANNOT, "can never succeed").
        reply.code(Rfc5530::ContactAdmin)
    }
}

impl Session<'_> {
    /// Commands before login: STARTTLS, LOGIN, AUTHENTICATE; anything else is refused.
    pub(super) async fn not_authenticated<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        body: CommandBody<'_>,
    ) -> Result<(Reply, Flow), Fail> {
        let reply = match body {
            CommandBody::StartTLS => {
                if self.tls {
                    Reply::bad("TLS is already active")
                } else if !self.can_starttls {
                    Reply::bad("STARTTLS is not available on this connection")
                } else {
                    return Ok((Reply::ok("Begin TLS negotiation now"), Flow::StartTls));
                }
            }
            CommandBody::Login { username, password } => {
                self.login(username.as_ref(), password.declassify().as_ref())
                    .await?
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                let initial = initial_response.map(|s| s.declassify().to_vec());
                self.authenticate(io, &mechanism, initial).await?
            }
            _ => Reply::bad("Not authenticated: command not allowed in this state"),
        };
        Ok((reply, Flow::Continue))
    }

    async fn login(&mut self, user: &[u8], pass: &[u8]) -> Result<Reply, Fail> {
        if !self.tls {
            return Ok(privacy_required());
        }
        if self.h.moving.is_moving() {
            // Issue 17, RFC 5530 §3 UNAVAILABLE: the accounts are served by the new
            // machine; the client tries again and finds it once the name points there.
            return Ok(Reply::no(crate::auth::MOVED_TEXT).code(Rfc5530::Unavailable));
        }
        let (Ok(user), Ok(pass)) = (std::str::from_utf8(user), std::str::from_utf8(pass)) else {
            return Ok(self.login_failed());
        };
        match self.h.auth.login(user, pass, self.client).await {
            Ok(address) => {
                if !self.logged_in(address).await {
                    // Removed by the operator while the password was checked.
                    return Ok(
                        Reply::no("Temporary authentication failure").code(Rfc5530::Unavailable)
                    );
                }
                let caps = self.caps();
                Ok(Reply::ok("Logged in").code(capability_code(&caps)))
            }
            Err(AuthError::Failed) => Ok(self.login_failed()),
            Err(AuthError::Temporary(e)) => {
                tracing::warn!("login: {e}");
                Ok(Reply::no("Temporary authentication failure").code(Rfc5530::Unavailable))
            }
            // RFC 5530 §3: UNAVAILABLE, a temporary refusal; the password was not checked.
            Err(AuthError::TooMany(_)) => Ok(Reply::no(
                "Too many login attempts from your address, try again later",
            )
            .code(Rfc5530::Unavailable)),
            Err(AuthError::CreationRefused(refusal)) => Ok(creation_refused(&refusal)),
        }
    }

    fn login_failed(&mut self) -> Reply {
        self.failed_logins += 1;
        tracing::debug!("authentication failed");
        if self.failed_logins >= MAX_FAILED_LOGINS {
            self.bye_after = Some("Too many invalid authentication attempts");
        }
        Reply::no("Authentication failed.").code(Rfc5530::AuthenticationFailed)
    }

    /// Enter the authenticated state; `false` when the account is gone (removed after
    /// the password was checked: its removal closed no receiver of this session yet).
    async fn logged_in(&mut self, address: String) -> bool {
        // Subscribe first so no change after the login is missed.
        self.events = Some(self.h.events.subscribe(&address));
        // LL-1: the day of the last IMAP login (the store writes only on change).
        let day = self.h.clock.unix_now() / 86_400 * 86_400;
        match self.h.store.set_last_login_day(&address, day).await {
            Ok(true) => {}
            Ok(false) => {
                self.events = None;
                return false;
            }
            Err(e) => tracing::warn!("last login not recorded: {e}"),
        }
        tracing::debug!("logged in");
        self.user = Some(address);
        true
    }

    /// AUTHENTICATE PLAIN (RFC 4616) with SASL-IR (RFC 4959) or one continuation.
    async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        mechanism: &AuthMechanism<'_>,
        initial: Option<Vec<u8>>,
    ) -> Result<Reply, Fail> {
        if !self.tls {
            return Ok(privacy_required());
        }
        if !matches!(mechanism, AuthMechanism::Plain) {
            return Ok(Reply::no("Unsupported authentication mechanism").code(Rfc5530::Cannot));
        }
        let data = match initial {
            Some(d) => d,
            None => {
                self.out.continue_empty();
                self.flush(io).await?;
                let read = self.inbuf.read_line(io, 16 * 1024);
                let line = match tokio::time::timeout(PREAUTH_TIMEOUT, read).await {
                    Ok(Ok(Some(line))) => line,
                    Ok(Ok(None)) => return Ok(Reply::bad("Line too long")),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => return Err(WireError::Eof.into()),
                };
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line == b"*" {
                    return Ok(Reply::bad("Authentication canceled"));
                }
                match base64::engine::general_purpose::STANDARD.decode(line) {
                    Ok(d) => d,
                    Err(_) => return Ok(Reply::bad("Invalid base64 data")),
                }
            }
        };
        let mut parts = data.split(|&b| b == 0);
        let (Some(authz), Some(authc), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(self.login_failed());
        };
        if !authz.is_empty() && authz != authc {
            return Ok(self.login_failed());
        }
        let (authc, pass) = (authc.to_vec(), pass.to_vec());
        self.login(&authc, &pass).await
    }
}
