//! Request bodies as the registry reads them ([`Body`]): counted for the metrics (blob uploads), and cut off
//! when the client stops sending. A body that stalls — no byte for `limits.body_timeout_secs` —
//! ends in [`RegistryError::RequestTimeout`] (408, and the connection is closed): a client that
//! opens an upload and goes quiet holds no upload lock, worker buffer or session for longer
//! than that. For an upload the stalled chunk is a failed chunk like any other: nothing of it
//! is acknowledged and the session goes on from its last acknowledged size.
//!
//! Bodies read by extractors outside `/v2/` (`/token` forms, `/api/v1` JSON, the web UI's forms)
//! get the same timer from the [`guard_bodies`] middleware: a stalled one is answered 408 too.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::Sleep;

use crate::error::{RegistryError, Result};

/// A request body: its chunks, or the error that ended it. `S` is actix's payload as a handler
/// takes it ([`web::Payload`]) or as a middleware finds it (`dev::Payload`).
pub struct Body<S = web::Payload> {
    payload: S,
    /// How long the client may stay silent; `None`: as long as it likes.
    idle: Option<Duration>,
    /// When the current wait for a chunk runs out: made at the first wait, reset at each
    /// later one (`armed` while it counts the current wait).
    deadline: Option<Pin<Box<Sleep>>>,
    armed: bool,
    done: bool,
    /// Whether its bytes count as uploaded (`berth_upload_bytes_total`: blob uploads only).
    counted: bool,
}

/// `payload` as a [`Body`] that ends in a 408 after `idle` without a byte (zero: no limit).
pub fn stream<S>(payload: S, idle: Duration) -> Body<S> {
    Body { payload, idle: (!idle.is_zero()).then_some(idle), deadline: None, armed: false, done: false, counted: true }
}

impl<S> Body<S> {
    /// The same body, not counted as uploaded bytes (a manifest).
    pub fn uncounted(self) -> Body<S> {
        Body { counted: false, ..self }
    }
}

impl<S: Stream<Item = std::result::Result<Bytes, PayloadError>> + Unpin> Stream for Body<S> {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.payload).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                this.armed = false;
                if this.counted {
                    crate::metrics::global().upload_bytes(bytes.len());
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(RegistryError::BadRequest(format!("request body: {e}")))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(idle) = this.idle else { return Poll::Pending };
                if this.deadline.is_none() {
                    this.deadline = Some(Box::pin(tokio::time::sleep(idle)));
                    this.armed = true;
                }
                let Some(deadline) = this.deadline.as_mut() else { return Poll::Pending };
                if !this.armed {
                    deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                    this.armed = true;
                }
                if deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.done = true;
                tracing::info!(secs = idle.as_secs(), "request body stalled: cut off");
                Poll::Ready(Some(Err(RegistryError::RequestTimeout(format!(
                    "the request body stalled: no data for {} seconds",
                    idle.as_secs()
                )))))
            }
        }
    }
}

/// A body read by an extractor, under the stall timer of [`Body`]; `stalled` is set when it
/// was cut off, so [`guard_bodies`] can answer 408 whatever the extractor made of the error.
struct Guarded {
    body: Body<actix_web::dev::Payload>,
    stalled: Arc<AtomicBool>,
}

impl Stream for Guarded {
    type Item = std::result::Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.body).poll_next(cx) {
            Poll::Ready(Some(Err(RegistryError::RequestTimeout(m)))) => {
                self.stalled.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, m)))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::other(e.to_string()))))),
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Middleware (`actix_web::middleware::from_fn`): every request body outside `/v2/` (whose
/// handlers read theirs through [`stream`]) stalls at most `limits.body_timeout_secs`; a stalled
/// one is answered `408 REQUEST_TIMEOUT` (connection closed) instead of what the extractor made
/// of the broken body.
pub async fn guard_bodies(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> std::result::Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let idle = req.app_data::<web::Data<crate::state::AppState>>().map_or(Duration::ZERO, |s| s.body_timeout);
    if idle.is_zero() || req.path().starts_with("/v2/") || req.path() == "/v2" {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    }
    let stalled = Arc::new(AtomicBool::new(false));
    let body = stream(req.take_payload(), idle).uncounted();
    let guarded: Pin<Box<dyn Stream<Item = std::result::Result<Bytes, PayloadError>>>> =
        Box::pin(Guarded { body, stalled: stalled.clone() });
    req.set_payload(actix_web::dev::Payload::from(guarded));
    let res = next.call(req).await;
    if !stalled.load(Ordering::Relaxed) {
        return res.map(ServiceResponse::map_into_left_body);
    }
    let stalled: actix_web::Error =
        RegistryError::RequestTimeout(format!("the request body stalled: no data for {} seconds", idle.as_secs()))
            .into();
    // (The request is not cloned before the call: routing needs it unshared.)
    let (request, _) = res?.into_parts();
    Ok(ServiceResponse::new(request, stalled.error_response()).map_into_right_body())
}
