//! In-process tests of the management services on SQLite in a temp dir: who may change
//! accounts, tokens, namespaces, robots and webhooks, and the audit record each change leaves.
//! Identities come from real logins (a password, or a personal access token).

use std::sync::Arc;

use super::By;
use super::accounts::{AccountAdmin, TokenSpec, UserChange};
use super::webhooks::EventAdmin;
use crate::auth::{AuthService, Identity};
use crate::config::AuthConfig;
use crate::error::RegistryError;
use crate::events::Events;
use crate::meta::Meta;

const CLI: By<'static> = By::CommandLine;
const ADDR: &str = "192.0.2.7";
const PASSWORD: &str = "correct-horse-1";

struct Fixture {
    _dir: tempfile::TempDir,
    auth: Arc<AuthService>,
    accounts: AccountAdmin,
    hooks: EventAdmin,
}

/// An admin `root`, users `bob`, `carol` and `dave`, all with [`PASSWORD`].
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::temp_sqlite(dir.path()).await;
    let auth = Arc::new(AuthService::new(meta.clone(), AuthConfig::default()).await.unwrap());
    let events = Arc::new(Events::new(meta.clone()));
    let accounts = AccountAdmin::new(meta, auth.clone(), events.clone());
    accounts.create_user(CLI, "root", Some(PASSWORD), true).await.unwrap();
    for name in ["bob", "carol", "dave"] {
        accounts.create_user(CLI, name, Some(PASSWORD), false).await.unwrap();
    }
    let hooks = EventAdmin::new(events, Some(auth.clone()));
    Fixture { _dir: dir, auth, accounts, hooks }
}

impl Fixture {
    async fn login(&self, name: &str) -> Identity {
        self.auth.login(name, PASSWORD, ADDR).await.unwrap()
    }

    /// `name` logged in with a new personal access token of `scope`.
    async fn token_login(&self, name: &str, scope: &str) -> Identity {
        let spec = TokenSpec { name: "t", scope, repository_pattern: None, expires_days: None };
        let (_, secret) = self.accounts.create_token(CLI, name, &spec).await.unwrap();
        self.auth.login(name, &secret, ADDR).await.unwrap()
    }
}

fn by(who: &Identity) -> By<'_> {
    By::Account(who, ADDR)
}

fn denied<T: std::fmt::Debug>(r: Result<T, RegistryError>) -> bool {
    matches!(r, Err(RegistryError::Denied(_)))
}

fn spec(name: &str) -> TokenSpec<'_> {
    TokenSpec { name, scope: "push", repository_pattern: None, expires_days: None }
}

#[tokio::test]
async fn only_administrators_with_a_password_manage_users() {
    let f = fixture().await;
    let (root, bob) = (f.login("root").await, f.login("bob").await);
    let root_token = f.token_login("root", "delete").await;
    assert!(f.accounts.create_user(by(&root), "erin", Some(PASSWORD), false).await.is_ok());
    assert!(denied(f.accounts.create_user(by(&bob), "frank", Some(PASSWORD), false).await));
    assert!(denied(f.accounts.create_user(by(&root_token), "frank", Some(PASSWORD), false).await));
    assert!(denied(f.accounts.users(by(&bob)).await));
    assert_eq!(f.accounts.users(by(&root)).await.unwrap().len(), 5);
    let disable = UserChange { disabled: Some(true), ..Default::default() };
    assert!(denied(f.accounts.update_user(by(&bob), "carol", &disable, None).await));
    assert!(f.accounts.update_user(by(&root), "carol", &disable, None).await.unwrap().disabled);
    assert!(denied(f.accounts.delete_user(by(&bob), "dave").await));

    // The audit log names who did it and from where; refused attempts leave nothing.
    let log = f.hooks.audit(by(&root), None, Some("user.create"), None, 100).await.unwrap();
    let erin: Vec<_> = log.iter().filter(|e| e.target.as_deref() == Some("erin")).collect();
    assert_eq!(erin.len(), 1);
    assert_eq!((erin[0].actor.as_str(), erin[0].addr.as_deref()), ("root", Some(ADDR)));
    assert!(log.iter().all(|e| e.target.as_deref() != Some("frank")));
    let cli = log.iter().find(|e| e.target.as_deref() == Some("bob")).unwrap();
    assert_eq!((cli.actor.as_str(), cli.addr.as_deref()), ("cli", None));
}

#[tokio::test]
async fn administrators_cannot_lock_themselves_out() {
    let f = fixture().await;
    let root = f.login("root").await;
    let disable = UserChange { disabled: Some(true), ..Default::default() };
    let demote = UserChange { admin: Some(false), ..Default::default() };
    for change in [&disable, &demote] {
        let r = f.accounts.update_user(by(&root), "root", change, None).await;
        assert!(matches!(r, Err(RegistryError::Invalid(_))), "{r:?}");
    }
    assert!(matches!(f.accounts.delete_user(by(&root), "root").await, Err(RegistryError::Invalid(_))));
    // Another administrator, or the command line, may.
    assert!(f.accounts.update_user(CLI, "root", &demote, None).await.is_ok());
}

#[tokio::test]
async fn namespaces_are_managed_by_their_maintainers() {
    let f = fixture().await;
    let (bob, carol, dave) = (f.login("bob").await, f.login("carol").await, f.login("dave").await);
    f.accounts.create_org(by(&bob), "team").await.unwrap();
    let view = f.accounts.namespace(by(&bob), "team").await.unwrap();
    assert!(view.may_manage && !view.namespace.public);
    assert_eq!(view.members, vec![("bob".to_string(), "maintainer".to_string())]);

    assert!(denied(f.accounts.set_visibility(by(&carol), "team", true).await));
    assert!(denied(f.accounts.set_member(by(&carol), "team", "carol", Some("maintainer")).await));
    f.accounts.set_member(by(&bob), "team", "carol", Some("reader")).await.unwrap();
    let seen = f.accounts.namespace(by(&carol), "team").await.unwrap();
    assert!(!seen.may_manage, "a reader sees the private namespace but does not manage it");
    assert!(matches!(f.accounts.namespace(by(&dave), "team").await, Err(RegistryError::NotFound(_))));
    assert!(f.accounts.namespaces(by(&dave)).await.unwrap().iter().all(|n| n.name != "team"));

    // Robots: created, listed, given tokens and deleted by the namespace's managers only.
    assert!(denied(f.accounts.create_robot(by(&carol), "team", "ci", "writer").await));
    let robot = f.accounts.create_robot(by(&bob), "team", "ci", "writer").await.unwrap();
    assert!(denied(f.accounts.create_token(by(&carol), &robot.name, &spec("deploy")).await));
    f.accounts.create_token(by(&bob), &robot.name, &spec("deploy")).await.unwrap();
    assert_eq!(f.accounts.tokens(by(&bob), Some(&robot.name)).await.unwrap().len(), 1);
    assert!(denied(f.accounts.tokens(by(&carol), Some(&robot.name)).await));
    let r = f.accounts.tokens(by(&carol), Some("bob")).await;
    assert!(matches!(r, Err(RegistryError::NotFound(_))), "another user's tokens: {r:?}");
    assert!(f.accounts.robots(by(&carol), None).await.unwrap().is_empty());
    assert_eq!(f.accounts.robots(by(&bob), Some("team")).await.unwrap().len(), 1);
    assert!(denied(f.accounts.delete_robot(by(&carol), &robot.name).await));
    f.accounts.delete_robot(by(&bob), &robot.name).await.unwrap();
}

#[tokio::test]
async fn tokens_never_widen_themselves_and_are_revoked_by_their_owner() {
    let f = fixture().await;
    let bob_token = f.token_login("bob", "delete").await;
    assert!(denied(f.accounts.create_token(by(&bob_token), "bob", &spec("wider")).await));
    assert!(denied(f.accounts.create_org(by(&bob_token), "sneaky").await));
    // A token may read its account's token list.
    let bob_tokens = f.accounts.tokens(by(&bob_token), None).await.unwrap();
    assert_eq!(bob_tokens.len(), 1);

    let (bob, carol, root) = (f.login("bob").await, f.login("carol").await, f.login("root").await);
    let (mine, _) = f.accounts.create_token(by(&bob), "bob", &spec("laptop")).await.unwrap();
    let r = f.accounts.revoke_token(by(&carol), mine.id).await;
    assert!(matches!(r, Err(RegistryError::NotFound(_))), "someone else's token does not show: {r:?}");
    f.accounts.revoke_token(by(&bob), mine.id).await.unwrap();
    // Administrators revoke anyone's.
    f.accounts.revoke_token(by(&root), bob_tokens[0].id).await.unwrap();
    assert!(f.accounts.tokens(by(&bob), None).await.unwrap().is_empty());
}

#[tokio::test]
async fn own_password_needs_the_current_one() {
    let f = fixture().await;
    let bob = f.login("bob").await;
    let r = f.accounts.change_own_password(by(&bob), "wrong-password", "another-pass-2", None).await;
    assert!(denied(r));
    f.accounts.change_own_password(by(&bob), PASSWORD, "another-pass-2", None).await.unwrap();
    assert!(f.auth.login("bob", "another-pass-2", ADDR).await.is_ok());
}

#[tokio::test]
async fn webhooks_are_made_by_administrators_and_seen_by_namespace_managers() {
    let f = fixture().await;
    let (root, bob, carol) = (f.login("root").await, f.login("bob").await, f.login("carol").await);
    f.accounts.create_org(by(&bob), "team").await.unwrap();
    let url = "https://hooks.example.com/secret-path?key=abc";
    assert!(denied(f.hooks.create(by(&bob), Some("team"), url, None, None).await));
    let (hook, secret) = f.hooks.create(by(&root), Some("team"), url, None, None).await.unwrap();
    assert!(secret.is_some_and(|s| s.len() >= 16));
    f.hooks.create(by(&root), None, "https://all.example.com/x", None, None).await.unwrap();

    // The manager sees the namespace's webhook without the URL's path; others see none.
    let seen = f.hooks.webhooks(by(&bob)).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].url, "https://hooks.example.com");
    assert!(f.hooks.webhooks(by(&carol)).await.unwrap().is_empty());
    assert_eq!(f.hooks.webhooks(by(&root)).await.unwrap().iter().filter(|h| h.url == url).count(), 1);
    assert!(f.hooks.deliveries(by(&bob), hook.id, None, 10).await.is_ok());
    assert!(matches!(f.hooks.deliveries(by(&carol), hook.id, None, 10).await, Err(RegistryError::NotFound(_))));
    assert!(denied(f.hooks.set_enabled(by(&bob), hook.id, false).await));
    assert!(denied(f.hooks.delete(by(&bob), hook.id).await));
    assert!(denied(f.hooks.audit(by(&bob), None, None, None, 10).await));
    f.hooks.delete(by(&root), hook.id).await.unwrap();
    let log = f.hooks.audit(CLI, None, Some("webhook.delete"), None, 10).await.unwrap();
    assert_eq!((log.len(), log[0].actor.as_str()), (1, "root"));
}
