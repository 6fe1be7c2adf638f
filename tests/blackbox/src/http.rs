//! A minimal HTTP/1.1 client for the few HTTPS checks (onboarding, `/mxdeliv`): one
//! request per connection with `Connection: close`, chunked or close-delimited bodies
//! (RFC 9112 §6, §7.1).

use std::time::Duration;

use crate::conn::{LineConn, ReadError};

/// A response: status code, header lines (raw), body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub status_line: String,
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header of that name (case-insensitive), value trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send `head` (request line and headers, without the final empty line; `Connection:
/// close` and `Content-Length` are added) and `body`, read the response.
pub async fn request(
    conn: &mut LineConn,
    head: &str,
    body: &[u8],
) -> Result<HttpResponse, ReadError> {
    let mut req = head
        .trim_end()
        .replace('\n', "\r\n")
        .replace("\r\r\n", "\r\n");
    req += &format!(
        "\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    conn.write_all(&bytes).await.map_err(ReadError::Io)?;
    let status_line = String::from_utf8_lossy(&conn.read_line().await?).into_owned();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut headers = Vec::new();
    // Bounded: 200 header lines at most.
    for _ in 0..200 {
        let line = conn.read_line().await?;
        if line.is_empty() {
            break;
        }
        headers.push(String::from_utf8_lossy(&line).into_owned());
    }
    let mut resp = HttpResponse {
        status,
        status_line,
        headers,
        body: Vec::new(),
    };
    let chunked = resp
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        // Bounded: 100000 chunks at most.
        for _ in 0..100_000 {
            let size = conn.read_line().await?;
            let size = String::from_utf8_lossy(&size);
            let size = size.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| ReadError::Closed)?;
            if size == 0 {
                break;
            }
            resp.body.extend(conn.read_exact(size).await?);
            conn.read_line().await?;
        }
    } else if let Some(len) = resp.header("Content-Length").and_then(|v| v.parse().ok()) {
        resp.body = conn.read_exact(len).await?;
    } else {
        let (_, rest) = conn.wait_closed(Duration::from_secs(5)).await;
        resp.body = rest;
    }
    Ok(resp)
}
