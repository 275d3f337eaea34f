//! The webhook sender: a task on every node (unless `webhooks.deliver = false`) that claims
//! due deliveries from the queue in the database (a lease, so each is sent by one node at a
//! time), POSTs them with an HMAC-SHA256 signature, and records the outcome: delivered on any
//! 2xx, else retried with exponential backoff until `max_attempts`, then `failed`.
//!
//! Headers: `X-Berth-Event` (push, pull, delete, mirror), `X-Berth-Event-Id`,
//! `X-Berth-Delivery` (the delivery's id; the same on every attempt) and
//! `X-Berth-Signature: sha256=<hex HMAC-SHA256 of the body keyed with the webhook's secret>`.
//! Secrets and webhook URLs (which may carry credentials) are never logged.

use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};

use super::Events;
use crate::config::WebhooksConfig;
use crate::meta::{Delivery, Outcome, now_millis};
use crate::metrics;

/// Deliveries claimed (and sent side by side, and recorded in one transaction) at once.
const BATCH: i64 = 32;

/// `sha256=<hex>` of the HMAC-SHA256 of `body` keyed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait before attempt `attempts + 1`, in milliseconds.
pub fn backoff_ms(config: &WebhooksConfig, attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 30) - 1;
    let wait = config.backoff_initial_ms.saturating_mul(1u64 << exp);
    wait.min(config.backoff_max_secs.saturating_mul(1000)) as i64
}

/// Starts the sender on the current runtime.
pub fn spawn(events: Arc<Events>, config: WebhooksConfig) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_secs.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()?;
    tokio::spawn(run(events, config, client));
    Ok(())
}

async fn run(events: Arc<Events>, config: WebhooksConfig, client: reqwest::Client) {
    let lease_ms = (config.timeout_secs as i64 + 30) * 1000;
    let poll = Duration::from_millis(config.poll_ms.max(10));
    let mut last_prune = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        let claimed = match events.meta().claim_deliveries(lease_ms, BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhook queue unavailable");
                Vec::new()
            }
        };
        let full = claimed.len() as i64 == BATCH;
        let sends = claimed.into_iter().map(|d| send(&events, &config, &client, d));
        let outcomes: Vec<_> = futures_util::future::join_all(sends).await.into_iter().flatten().collect();
        record(&events, &outcomes).await;
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = std::time::Instant::now();
            if let Err(e) = events.meta().prune_deliveries(config.history_days as i64 * 86_400).await {
                tracing::warn!(error = %e, "could not prune the webhook history");
            }
        }
        if !full {
            tokio::select! {
                _ = events.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// Records the attempts of a batch in one transaction (a push-heavy SQLite server would
/// otherwise make each delivery wait its turn for the write lock).
async fn record(events: &Events, outcomes: &[(i64, i64, Outcome)]) {
    match events.meta().finish_attempts(outcomes).await {
        Ok(recorded) => {
            for ((id, attempt, _), recorded) in outcomes.iter().zip(recorded) {
                if !recorded {
                    tracing::warn!(
                        delivery = id,
                        attempt,
                        "webhook attempt outlived its lease; another attempt owns the delivery"
                    )
                }
            }
        }
        // The leases run out and the deliveries are attempted again (at least once).
        Err(e) => tracing::warn!(deliveries = outcomes.len(), error = %e, "could not record webhook attempts"),
    }
}

/// Sends one delivery; what it came to, to record (`None`: not attempted, retried when its
/// lease ends).
async fn send(
    events: &Events,
    config: &WebhooksConfig,
    client: &reqwest::Client,
    d: Delivery,
) -> Option<(i64, i64, Outcome)> {
    let hook = match events.meta().webhook(d.webhook_id).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "webhook lookup failed; the delivery is retried when its lease ends");
            return None;
        }
    };
    let gone = hook.is_none();
    let result = match hook {
        None => Err((None, "the webhook was deleted".to_string())),
        Some(hook) => {
            let sent = client
                .post(&hook.url)
                .header("Content-Type", "application/json")
                .header("X-Berth-Event", &d.action)
                .header("X-Berth-Event-Id", &d.event_id)
                .header("X-Berth-Delivery", d.id.to_string())
                .header("X-Berth-Signature", signature(&hook.secret, d.payload.as_bytes()))
                .body(d.payload.clone())
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => Ok(resp.status().as_u16() as i64),
                Ok(resp) => Err((Some(resp.status().as_u16() as i64), format!("receiver answered {}", resp.status()))),
                // Without the URL: it may carry credentials.
                Err(e) => Err((None, e.without_url().to_string())),
            }
        }
    };
    let outcome = match result {
        Ok(status_code) => {
            metrics::global().webhook_attempt("delivered");
            tracing::info!(webhook = d.webhook_id, delivery = d.id, attempt = d.attempts, "webhook delivered");
            Outcome::Delivered { status_code }
        }
        Err((status_code, error)) => {
            let give_up = gone || d.attempts >= config.max_attempts as i64;
            let next_attempt_at = (!give_up).then(|| now_millis() + backoff_ms(config, d.attempts));
            metrics::global().webhook_attempt(if give_up { "failed" } else { "retry" });
            tracing::warn!(webhook = d.webhook_id, delivery = d.id, attempt = d.attempts, give_up, %error, "webhook delivery failed");
            Outcome::Failed { status_code, error, next_attempt_at }
        }
    };
    Some((d.id, d.attempts, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_test_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = WebhooksConfig { backoff_initial_ms: 500, backoff_max_secs: 3, ..WebhooksConfig::default() };
        assert_eq!(backoff_ms(&c, 1), 500);
        assert_eq!(backoff_ms(&c, 2), 1000);
        assert_eq!(backoff_ms(&c, 3), 2000);
        assert_eq!(backoff_ms(&c, 4), 3000);
        assert_eq!(backoff_ms(&c, 40), 3000);
    }
}
