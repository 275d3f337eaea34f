//! Request bodies as the registry reads them ([`Body`]): counted for the metrics (blob uploads), and cut off
//! when the client stops sending. A body that stalls — no byte for `limits.body_timeout_secs` —
//! ends in [`RegistryError::RequestTimeout`] (408, and the connection is closed): a client that
//! opens an upload and goes quiet holds no upload lock, worker buffer or session for longer
//! than that. For an upload the stalled chunk is a failed chunk like any other: nothing of it
//! is acknowledged and the session goes on from its last acknowledged size.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::web;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::Sleep;

use crate::error::{RegistryError, Result};

/// A request body: its chunks, or the error that ended it.
pub struct Body {
    payload: web::Payload,
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
pub fn stream(payload: web::Payload, idle: Duration) -> Body {
    Body { payload, idle: (!idle.is_zero()).then_some(idle), deadline: None, armed: false, done: false, counted: true }
}

impl Body {
    /// The same body, not counted as uploaded bytes (a manifest).
    pub fn uncounted(self) -> Body {
        Body { counted: false, ..self }
    }
}

impl Stream for Body {
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
