//! ACME state shared by the nodes (`crate::acme`): accounts per directory, the certificate of
//! a directory and domain list (with a version nodes poll and a renewal request flag), and the
//! pending challenges of the order in progress. Private keys arrive sealed; nothing here
//! decrypts.

use sqlx::Row;

use super::{Meta, now};
use crate::error::Result;

/// A stored ACME certificate.
#[derive(Debug, Clone)]
pub struct AcmeCertificate {
    pub directory: String,
    pub domains: String,
    pub chain_pem: String,
    pub key_sealed: String,
    /// Unix seconds.
    pub not_after: i64,
    pub version: i64,
    /// When `berth tls renew` asked for a renewal, if it did since the last one.
    pub renew_requested_at: Option<i64>,
}

impl Meta {
    /// The sealed credentials of the account on `directory`.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT credentials, contact FROM acme_accounts WHERE directory = $1")
            .bind(directory)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Stores (or replaces) the account of `directory`.
    pub async fn save_acme_account(&self, directory: &str, sealed: &str, contact: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO acme_accounts (directory, credentials, contact, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (directory) DO UPDATE SET credentials = excluded.credentials, contact = excluded.contact",
        )
        .bind(directory)
        .bind(sealed)
        .bind(contact)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Updates the contact recorded for the account of `directory`.
    pub async fn set_acme_account_contact(&self, directory: &str, contact: &str) -> Result<()> {
        sqlx::query("UPDATE acme_accounts SET contact = $2 WHERE directory = $1")
            .bind(directory)
            .bind(contact)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The certificate of `directory` for `domains`.
    pub async fn acme_certificate(&self, directory: &str, domains: &str) -> Result<Option<AcmeCertificate>> {
        let row = sqlx::query(
            "SELECT directory, domains, chain_pem, key_sealed, not_after, version, renew_requested_at \
             FROM acme_certificates WHERE directory = $1 AND domains = $2",
        )
        .bind(directory)
        .bind(domains)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| AcmeCertificate {
            directory: r.get(0),
            domains: r.get(1),
            chain_pem: r.get(2),
            key_sealed: r.get(3),
            not_after: r.get(4),
            version: r.get(5),
            renew_requested_at: r.get(6),
        }))
    }

    /// Stores a new certificate (its version one above the stored one); the renewal request
    /// is cleared unless it was made after `requested_seen` (the one the order answered).
    /// Returns the new version.
    pub async fn save_acme_certificate(
        &self,
        directory: &str,
        domains: &str,
        chain_pem: &str,
        key_sealed: &str,
        not_after: i64,
        requested_seen: Option<i64>,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO acme_certificates \
             (directory, domains, chain_pem, key_sealed, not_after, version, renew_requested_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, NULL, $6) \
             ON CONFLICT (directory, domains) DO UPDATE SET chain_pem = excluded.chain_pem, \
             key_sealed = excluded.key_sealed, not_after = excluded.not_after, \
             version = acme_certificates.version + 1, updated_at = excluded.updated_at, \
             renew_requested_at = CASE WHEN acme_certificates.renew_requested_at > $7 \
             THEN acme_certificates.renew_requested_at ELSE NULL END \
             RETURNING version",
        )
        .bind(directory)
        .bind(domains)
        .bind(chain_pem)
        .bind(key_sealed)
        .bind(not_after)
        .bind(now())
        .bind(requested_seen.unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.get(0))
    }

    /// Marks every stored certificate due for renewal; returns `(directory, domains, not_after)`
    /// of each.
    pub async fn request_acme_renewal(&self) -> Result<Vec<(String, String, i64)>> {
        let t = now();
        let rows =
            sqlx::query("UPDATE acme_certificates SET renew_requested_at = $1 RETURNING directory, domains, not_after")
                .bind(t)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Records a pending challenge until `expires_at`.
    pub async fn put_acme_challenge(
        &self,
        token: &str,
        kind: &str,
        domain: &str,
        key_authorization: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO acme_challenges (token, kind, domain, key_authorization, expires_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token) DO UPDATE SET kind = excluded.kind, \
             domain = excluded.domain, key_authorization = excluded.key_authorization, expires_at = excluded.expires_at",
        )
        .bind(token)
        .bind(kind)
        .bind(domain)
        .bind(key_authorization)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes challenges (answered or given up), and any expired one.
    pub async fn delete_acme_challenges(&self, tokens: &[String]) -> Result<()> {
        for token in tokens {
            sqlx::query("DELETE FROM acme_challenges WHERE token = $1").bind(token).execute(self.pool()).await?;
        }
        sqlx::query("DELETE FROM acme_challenges WHERE expires_at < $1").bind(now()).execute(self.pool()).await?;
        Ok(())
    }

    /// The key authorization of a pending HTTP-01 challenge.
    pub async fn acme_http_challenge(&self, token: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT key_authorization FROM acme_challenges WHERE token = $1 AND kind = 'http-01' AND expires_at >= $2",
        )
        .bind(token)
        .bind(now())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The pending TLS-ALPN-01 challenges: `(domain, key authorization)`.
    pub async fn acme_alpn_challenges(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT domain, key_authorization FROM acme_challenges WHERE kind = 'tls-alpn-01' AND expires_at >= $1 \
             ORDER BY token",
        )
        .bind(now())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
