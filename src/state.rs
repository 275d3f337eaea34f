//! What the HTTP doors (`/v2`, `/api/v1`, the web UI) share: the registry service, access
//! control, the mirror and events, built once by `crate::server`.

use std::sync::Arc;

use crate::auth::Authorizer;
use crate::events::Events;
use crate::mirror::Mirror;
use crate::registry::Registry;

/// What every HTTP handler shares.
pub struct AppState {
    pub registry: Arc<Registry>,
    pub auth: Arc<dyn Authorizer>,
    /// The pull-through mirror, when configured.
    pub mirror: Option<Arc<Mirror>>,
    /// Webhook events and the audit log.
    pub events: Arc<Events>,
    /// How long a request body may stall before it is cut off with 408
    /// (`limits.body_timeout_secs`; zero: no limit).
    pub body_timeout: std::time::Duration,
}
