//! The HTTPS client instant-acme talks to the CA through: one HTTP/1.1 request per
//! connection over rustls, trusting the roots outbound TLS trusts (web-PKI plus
//! `tls_extra_roots`, OUT-4), so a test CA (pebble) is trusted the same way a test peer
//! is, and the appliance needs no system CA store. Each request, body included, is
//! bounded in time; a failure to connect is reported as [`Unreachable`] so the pages
//! can say "cannot reach the CA".

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// How long one request to the CA may take (connect, TLS, request, whole response).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read (certificate chains are a few kB).
const MAX_BODY: usize = 1 << 20;

/// The CA could not be reached (DNS, TCP, TLS or timeout); the text says which.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

pub struct Client {
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    pub fn new(roots: rustls::RootCertStore) -> Result<Client, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

impl HttpClient for Client {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let tls = self.tls.clone();
        let what = req.uri().to_string();
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, send(tls, req)).await {
                Ok(result) => result,
                Err(_) => Err(unreachable(format!(
                    "no answer within {} s from {what}",
                    REQUEST_TIMEOUT.as_secs()
                ))),
            }
        })
    }
}

fn unreachable(msg: String) -> Error {
    Error::Other(Box::new(Unreachable(msg)))
}

async fn send(
    tls: tokio_rustls::TlsConnector,
    mut req: Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, Error> {
    let uri = req.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(Error::Str("the ACME directory must be an https:// URL"));
    }
    let host = uri.host().ok_or(Error::Str("URL without a host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(format!("cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.clone())
        .map_err(|_| Error::Str("the ACME directory host is not a valid name"))?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(format!("TLS with {host}:{port} failed: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(format!("HTTP with {host}:{port} failed: {e}")))?;
    // Drives the connection until the response is read; ends with the sender.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    // RFC 9112 §3.2: origin-form request target and a Host header.
    let target = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = target.parse().map_err(Error::InvalidUri)?;
    req.headers_mut().insert(
        hyper::header::HOST,
        authority
            .parse()
            .map_err(|_| Error::Str("the ACME directory host is not a valid header"))?,
    );
    let result = async {
        let rsp = sender.send_request(req).await.map_err(Error::Hyper)?;
        let (parts, body) = rsp.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(Error::Other)?
            .to_bytes();
        Ok(BytesResponse::from(Response::from_parts(
            parts,
            Full::new(body),
        )))
    }
    .await;
    drop(sender);
    driver.abort();
    result
}
