//! Fetching a bundle over HTTPS (OTA-4): resumable with an HTTP range request (RFC 9110
//! §14) and capped in size, written to a file on /data and fsynced. Through the relay's
//! one HTTPS client (`tls::client`, HTTP/1.1 over rustls with ring); the roots are the
//! caller's (normally `tls::client_roots`, so `tls_extra_roots` works for test servers).

use std::path::Path;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::UpdateError;
use crate::tls::client::{Body, HttpsClient, Options};

/// An HTTPS client for update downloads.
#[derive(Clone)]
pub struct Downloader {
    https: HttpsClient,
    /// Longest wait for a connection, the response head, or the next piece of the body.
    idle_timeout: Duration,
}

impl Downloader {
    pub fn new(roots: rustls::RootCertStore) -> Result<Downloader, UpdateError> {
        let idle_timeout = Duration::from_secs(60);
        // One connection per request (a download is rare, a resume a new request).
        let https = HttpsClient::verified(roots, Options::new(idle_timeout))
            .map_err(|e| UpdateError::Download(e.to_string()))?;
        Ok(Downloader {
            https,
            idle_timeout,
        })
    }
}

/// What a finished [`download`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// Final size of `dest`.
    pub size: u64,
    /// Bytes that were already there and kept (a resumed download).
    pub resumed_from: u64,
}

/// Downloads `url` (https only) into `dest`, continuing a partial file left by an earlier
/// attempt. Fails without growing `dest` beyond `max_size` bytes. A server that ignores the
/// range gets a fresh download; a partial file larger than the cap is discarded.
pub async fn download(
    url: &str,
    dest: &Path,
    max_size: u64,
    client: &Downloader,
) -> Result<Downloaded, UpdateError> {
    let target = parse_target(url)?;
    let mut have = match tokio::fs::metadata(dest).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(UpdateError::io("cannot stat", dest, e)),
    };
    if have > max_size {
        have = 0;
    }
    // At most one restart (after a 416 for a partial file that does not fit the resource).
    for _ in 0..2 {
        match fetch(&target, dest, have, max_size, client).await? {
            Fetch::Done(d) => return Ok(d),
            Fetch::Restart => have = 0,
        }
    }
    Err(UpdateError::Download(
        "the server rejects the range request".into(),
    ))
}

enum Fetch {
    Done(Downloaded),
    Restart,
}

async fn fetch(
    t: &Target,
    dest: &Path,
    have: u64,
    max_size: u64,
    client: &Downloader,
) -> Result<Fetch, UpdateError> {
    let timeout = client.idle_timeout;
    let dl = |s: String| UpdateError::Download(s);
    let within = |what: &'static str, secs: Duration| {
        move |_| UpdateError::Download(format!("{what}: no answer within {} s", secs.as_secs()))
    };
    let mut req = hyper::Request::get(t.url.as_str());
    if have > 0 {
        // RFC 9110 §14.2: the rest from `have` on.
        req = req.header(hyper::header::RANGE, format!("bytes={have}-"));
    }
    let req = req
        .body(Body::default())
        .map_err(|e| dl(format!("request: {e}")))?;
    // Connecting and TLS are bounded by the client (`idle_timeout` each).
    let resp = tokio::time::timeout(timeout, client.https.send(req))
        .await
        .map_err(within("response", timeout))?
        .map_err(|e| dl(e.to_string()))?;
    let status = resp.status().as_u16();
    let content_range = resp
        .headers()
        .get(hyper::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_length = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let start = match status {
        200 => 0,
        206 => {
            // RFC 9110 §14.4: "bytes first-last/complete".
            let (first, total) = content_range
                .as_deref()
                .and_then(parse_content_range)
                .ok_or_else(|| dl("206 without a usable Content-Range".into()))?;
            if first != have {
                return Err(dl(format!(
                    "server resumed at byte {first}, asked for {have}"
                )));
            }
            if let Some(total) = total
                && total > max_size
            {
                return Err(too_large(total, max_size));
            }
            have
        }
        416 if have > 0 => {
            // RFC 9110 §15.5.17: "bytes */complete" — already complete, or a stale file.
            let total = content_range
                .as_deref()
                .and_then(|v| v.strip_prefix("bytes */"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            if total == Some(have) {
                return Ok(Fetch::Done(Downloaded {
                    size: have,
                    resumed_from: have,
                }));
            }
            return Ok(Fetch::Restart);
        }
        s => return Err(dl(format!("HTTP status {s}"))),
    };
    if let Some(len) = content_length
        && start + len > max_size
    {
        return Err(too_large(start + len, max_size));
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(dest)
        .await
        .map_err(|e| UpdateError::io("cannot open", dest, e))?;
    file.set_len(start)
        .await
        .map_err(|e| UpdateError::io("cannot truncate", dest, e))?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| UpdateError::io("cannot seek", dest, e))?;
    let mut body = resp.into_body();
    let mut size = start;
    loop {
        let frame = tokio::time::timeout(timeout, body.frame())
            .await
            .map_err(within("download", timeout))?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| dl(format!("download cut after {size} bytes: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // OTA-4: never more than the cap on /data.
        if size + data.len() as u64 > max_size {
            file.set_len(max_size.min(size))
                .await
                .map_err(|e| UpdateError::io("cannot truncate", dest, e))?;
            return Err(too_large(size + data.len() as u64, max_size));
        }
        file.write_all(&data)
            .await
            .map_err(|e| UpdateError::io("cannot write", dest, e))?;
        size += data.len() as u64;
    }
    file.sync_all()
        .await
        .map_err(|e| UpdateError::io("cannot fsync", dest, e))?;
    if let Some(len) = content_length
        && size != start + len
    {
        return Err(dl(format!(
            "download cut after {size} of {} bytes",
            start + len
        )));
    }
    Ok(Fetch::Done(Downloaded {
        size,
        resumed_from: start,
    }))
}

fn too_large(size: u64, max: u64) -> UpdateError {
    UpdateError::Download(format!(
        "bundle is larger than the limit ({size} > {max} bytes)"
    ))
}

/// `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    if last < first {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first, total))
}

/// Where a download goes: an `https://` URL with a valid host (checked by the one https
/// URL parser of the crate).
struct Target {
    url: String,
}

fn parse_target(url: &str) -> Result<Target, UpdateError> {
    crate::net::HttpsUrl::parse(url)
        .map(|_| Target {
            url: url.to_string(),
        })
        .ok_or_else(|| UpdateError::Download(format!("{url:?} is not an https URL")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 9-3/100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert!(parse_target("http://example.org/b").is_err());
        assert!(parse_target("https://127.0.0.1:8443/b.tar").is_ok());
    }

    /// HTTPS on 127.0.0.1 serving `body` at any path, honouring `Range: bytes=N-` unless
    /// `ignore_range` is set. Records the Range headers it saw.
    struct Server {
        url: String,
        roots: rustls::RootCertStore,
        ranges: Arc<Mutex<Vec<Option<String>>>>,
        ignore_range: Arc<AtomicBool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve(dir: &Path, body: Vec<u8>) -> Server {
        let (acceptor, roots) = crate::testing::loopback_tls(dir);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ranges: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let ignore_range = Arc::new(AtomicBool::new(false));
        let body = Arc::new(body);
        let (log, ignore) = (ranges.clone(), ignore_range.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, log, ignore, body) =
                    (acceptor.clone(), log.clone(), ignore.clone(), body.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let range = req
                            .headers()
                            .get(hyper::header::RANGE)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        log.lock().unwrap().push(range.clone());
                        let from = range
                            .filter(|_| !ignore.load(Ordering::SeqCst))
                            .and_then(|r| {
                                r.strip_prefix("bytes=")?
                                    .strip_suffix('-')?
                                    .parse::<usize>()
                                    .ok()
                            });
                        let len = body.len();
                        let resp = match from {
                            None => hyper::Response::new(Full::new(Bytes::from(body.to_vec()))),
                            Some(f) if f >= len => hyper::Response::builder()
                                .status(416)
                                .header("content-range", format!("bytes */{len}"))
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                            Some(f) => hyper::Response::builder()
                                .status(206)
                                .header("content-range", format!("bytes {f}-{}/{len}", len - 1))
                                .body(Full::new(Bytes::from(body[f..].to_vec())))
                                .unwrap(),
                        };
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Server {
            url: format!("https://127.0.0.1:{port}/bundle.tar"),
            roots,
            ranges,
            ignore_range,
            task,
        }
    }

    fn blob(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn fresh_resumed_and_complete_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let data = blob(300_000);
        let s = serve(dir.path(), data.clone()).await;
        let c = Downloader::new(s.roots.clone()).unwrap();
        let dest = dir.path().join("b.tar");

        let d = download(&s.url, &dest, 1 << 20, &c).await.unwrap();
        assert_eq!(
            d,
            Downloaded {
                size: 300_000,
                resumed_from: 0
            }
        );
        assert_eq!(std::fs::read(&dest).unwrap(), data);

        // A partial file (cut off earlier) is continued with a range request.
        std::fs::write(&dest, &data[..123_456]).unwrap();
        let d = download(&s.url, &dest, 1 << 20, &c).await.unwrap();
        assert_eq!(
            d,
            Downloaded {
                size: 300_000,
                resumed_from: 123_456
            }
        );
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert_eq!(
            s.ranges.lock().unwrap().last().unwrap().as_deref(),
            Some("bytes=123456-")
        );

        // Already complete: 416 with the full length.
        let d = download(&s.url, &dest, 1 << 20, &c).await.unwrap();
        assert_eq!(d.size, 300_000);
        assert_eq!(std::fs::read(&dest).unwrap(), data);

        // A server that ignores ranges sends everything: the file is rewritten, not appended.
        s.ignore_range.store(true, Ordering::SeqCst);
        std::fs::write(&dest, &data[..1000]).unwrap();
        let d = download(&s.url, &dest, 1 << 20, &c).await.unwrap();
        assert_eq!(
            d,
            Downloaded {
                size: 300_000,
                resumed_from: 0
            }
        );
        assert_eq!(std::fs::read(&dest).unwrap(), data);
    }

    #[tokio::test]
    async fn size_cap_and_bad_urls() {
        let dir = tempfile::tempdir().unwrap();
        let s = serve(dir.path(), blob(50_000)).await;
        let c = Downloader::new(s.roots.clone()).unwrap();
        let dest = dir.path().join("b.tar");
        let err = download(&s.url, &dest, 49_999, &c)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than the limit"), "{err}");
        assert!(std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0) <= 49_999);
        // Resumed: the total announced in Content-Range is checked too.
        std::fs::write(&dest, blob(10)).unwrap();
        let err = download(&s.url, &dest, 40_000, &c)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than the limit"), "{err}");

        let err = download("http://127.0.0.1/b", &dest, 10, &c)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not an https URL"), "{err}");
        // Untrusted certificate.
        let other = Downloader::new(rustls::RootCertStore::empty()).unwrap();
        let err = download(&s.url, &dest, 1 << 20, &other).await.unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
    }
}
