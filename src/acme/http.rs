//! The HTTP client instant-acme talks to the ACME server with: Berth's reqwest (rustls,
//! aws-lc-rs), trusting the system's CAs plus `tls.acme.ca_file`, with timeouts, so an ACME
//! server that does not answer fails an attempt instead of hanging it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};

#[derive(Clone)]
pub(super) struct AcmeHttp(reqwest::Client);

impl AcmeHttp {
    pub(super) fn new(ca_file: &str) -> anyhow::Result<AcmeHttp> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if !ca_file.is_empty() {
            let roots = crate::tls::certs::reqwest_roots(std::path::Path::new(ca_file)).context("tls.acme.ca_file")?;
            builder = builder.tls_certs_merge(roots);
        }
        Ok(AcmeHttp(builder.build().context("the ACME HTTP client")?))
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(reqwest::Body::wrap(body))
                .send()
                .await
                .map_err(|e| Error::Other(Box::new(e)))?;
            let mut head = http::Response::builder().status(response.status());
            if let Some(headers) = head.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await.map_err(|e| Error::Other(Box::new(e)))?;
            let (parts, ()) = head.body(())?.into_parts();
            Ok(BytesResponse { parts, body: Box::new(body) })
        })
    }
}
