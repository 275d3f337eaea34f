//! Management: what an admin or a namespace owner changes, each operation once with its checks
//! and its audit record, for every door (the `/api/v1` handlers, the web UI, the CLI) to call.
//! Accounts, tokens, robots, namespaces and members are `crate::auth::AuthService`'s; this
//! room holds what the doors shared by copying before: webhooks and the audit detail of a
//! new token.

pub mod webhooks;

use serde_json::{Value, json};

use crate::meta::TokenRecord;

/// What the audit log keeps of a new token (never its secret).
pub fn token_audit(t: &TokenRecord) -> Value {
    json!({ "id": t.id, "name": t.name, "scope": t.scope, "repository_pattern": t.repository_pattern, "expires_at": t.expires_at })
}
