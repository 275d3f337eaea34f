//! Running a registry: Prometheus [`metrics`], registry [`events`] (webhooks and the audit
//! log) and the [`webhooks`] sender. The HTTP side (`/metrics`, `/api/v1/webhooks`,
//! `/api/v1/audit`) is `crate::api::ops`.

pub mod events;
pub mod metrics;
pub mod webhooks;

pub use events::{Events, RepoEvent};
