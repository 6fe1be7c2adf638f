//! The HTTPS client instant-acme talks to the CA through: the relay's one HTTPS client
//! (`tls::client`), one HTTP/1.1 request per connection over rustls, trusting the roots outbound TLS trusts (web-PKI plus
//! `tls_extra_roots`, OUT-4), so a test CA (pebble) is trusted the same way a test peer
//! is, and the appliance needs no system CA store. Each request, body included, is
//! bounded in time; a failure to connect is reported as [`Unreachable`] so the pages
//! can say "cannot reach the CA".

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};

use crate::tls::client::{Body, HttpsClient, HttpsError, Options, read_body};

/// How long one request to the CA may take (connect, TLS, request, whole response).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read (certificate chains are a few kB).
const MAX_BODY: usize = 1 << 20;

/// The CA could not be reached (DNS, TCP, TLS or timeout); the text says which.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

pub struct Client {
    https: HttpsClient,
}

impl Client {
    pub fn new(roots: rustls::RootCertStore) -> Result<Client, String> {
        // One connection per request, as every request is bounded on its own.
        let https = HttpsClient::verified(roots, Options::new(REQUEST_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(Client { https })
    }
}

impl HttpClient for Client {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let https = self.https.clone();
        let what = req.uri().to_string();
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, send(https, req)).await {
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
    https: HttpsClient,
    req: Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, Error> {
    if req.uri().scheme_str() != Some("https") {
        return Err(Error::Str("the ACME directory must be an https:// URL"));
    }
    let (parts, body) = req.into_parts();
    // instant-acme's bodies are in memory (JSON documents); collecting cannot fail.
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    // The URL is absolute; the client sends the origin-form target and `Host`
    // (RFC 9112 §3.2).
    let req = Request::from_parts(parts, Body::new(body));
    let rsp = https.send(req).await.map_err(|e| match e {
        HttpsError::Connect(msg) => unreachable(msg),
        other => Error::Other(Box::new(other)),
    })?;
    let (parts, body) = rsp.into_parts();
    let body = read_body(body, MAX_BODY)
        .await
        .map_err(|e| Error::Other(Box::new(e)))?;
    Ok(BytesResponse::from(Response::from_parts(
        parts,
        Full::new(body),
    )))
}
