//! IDLE (RFC 2177, IMAP-5): changes are reported as they happen — the session waits on
//! the account's events, not on a timer — until DONE or the autologout time.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

use crate::imap::encode::Reply;
use crate::imap::session::{AUTOLOGOUT, Fail, Flow, Session};
use crate::imap::wire::WireError;

/// Most bytes a client may send while idling before its DONE.
const MAX_BEFORE_DONE: usize = 1024;

impl Session<'_> {
    pub(super) async fn idle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
    ) -> Result<(Reply, Flow), Fail> {
        self.out.continue_text("idling");
        if self.selected.is_some() {
            self.sync(true);
        }
        self.flush(io).await?;
        let mut rx = self.events.take();
        let result = self.idle_loop(io, &mut rx).await;
        self.events = rx;
        result
    }

    async fn idle_loop<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        rx: &mut Option<watch::Receiver<u64>>,
    ) -> Result<(Reply, Flow), Fail> {
        let deadline = tokio::time::Instant::now() + AUTOLOGOUT;
        let mut events_open = rx.is_some();
        loop {
            if let Some(line) = self.inbuf.take_line() {
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(if line.eq_ignore_ascii_case(b"DONE") {
                    (Reply::ok("Idle completed"), Flow::Continue)
                } else {
                    (Reply::bad("Expected DONE"), Flow::Continue)
                });
            }
            if self.inbuf.len() > MAX_BEFORE_DONE {
                self.out.bye("Expected DONE");
                return Ok((Reply::bad("Expected DONE"), Flow::Close));
            }
            let mut tmp = vec![0u8; 1024];
            let changed = async {
                match rx.as_mut() {
                    Some(rx) if events_open => rx.changed().await.is_ok(),
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                r = io.read(&mut tmp) => match r {
                    Ok(0) | Err(_) => return Err(WireError::Eof.into()),
                    Ok(n) => self.inbuf.push(&tmp[..n]),
                },
                still_open = changed => {
                    if !still_open {
                        events_open = false;
                        // The account was removed: the session ends.
                        if self.user.is_some() {
                            self.out.bye(self.ended_text());
                            let _ = self.flush(io).await;
                            return Err(WireError::Eof.into());
                        }
                        continue;
                    }
                    if let Some(rx) = rx.as_mut() {
                        rx.borrow_and_update();
                    }
                    self.sync(true);
                    self.flush(io).await?;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.out.bye("Autologout; idle for too long");
                    let _ = self.flush(io).await;
                    return Err(WireError::Eof.into());
                }
            }
        }
    }
}
