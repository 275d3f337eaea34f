//! One ACME order (RFC 8555 section 7.4) with instant-acme: new order for the domains, each
//! pending authorization's challenge published (so this node and every other one answers it),
//! the challenges set ready, the order polled until ready, finalized with a CSR for a new
//! P-256 key, and the certificate chain downloaded. The challenges are withdrawn whatever
//! happens.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use instant_acme::{Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};

use super::{Acme, Pending};
use crate::config::AcmeChallenge;

/// How long the CA gets to validate and to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// A new certificate: its PEM chain and the PEM (PKCS#8) of its private key.
pub(super) struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Orders a certificate for the configured domains on `account`.
pub(super) async fn obtain(acme: &Acme, account: &Account) -> anyhow::Result<Issued> {
    let identifiers: Vec<Identifier> = acme.settings.domains.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await.context("creating the order")?;
    tracing::info!(domains = ?acme.settings.domains, order = order.url(), "ACME order created");

    // The challenges of the pending authorizations (authorizations still valid from an
    // earlier order need none).
    let challenge_type = match acme.settings.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut pending = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let authz = authz.context("fetching an authorization")?;
        let domain = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => bail!("the authorization for {domain} is {other:?}"),
        }
        let challenge = authz.challenges.iter().find(|c| c.r#type == challenge_type).ok_or_else(|| {
            anyhow!("the ACME server offers no {} challenge for {domain}", acme.settings.challenge_name())
        })?;
        pending.push(Pending {
            token: challenge.token.clone(),
            domain,
            key_authorization: format!("{}.{}", challenge.token, account.key_thumbprint()),
        });
    }
    acme.publish(&pending).await?;
    let result = validate_and_issue(acme, &mut order, &challenge_type, !pending.is_empty()).await;
    acme.withdraw(&pending).await;
    result
}

async fn validate_and_issue(
    acme: &Acme,
    order: &mut instant_acme::Order,
    challenge_type: &ChallengeType,
    any_pending: bool,
) -> anyhow::Result<Issued> {
    if any_pending {
        if acme.settings.challenge == AcmeChallenge::TlsAlpn01 {
            // Every node learns the validation certificates from the database within this
            // (a TCP balancer may send the CA's connection to any of them).
            tokio::time::sleep(super::VALIDATION_SYNC + Duration::from_millis(500)).await;
        }
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.context("fetching an authorization")?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let domain = authz.identifier().to_string();
            let mut challenge =
                authz.challenge(challenge_type.clone()).ok_or_else(|| anyhow!("no challenge for {domain}"))?;
            challenge
                .set_ready()
                .await
                .with_context(|| format!("telling the CA the challenge for {domain} is ready"))?;
        }
    }
    let status = order
        .poll_ready(&RetryPolicy::new().initial_delay(Duration::from_millis(250)).timeout(VALIDATION_TIMEOUT))
        .await
        .context("waiting for the CA to validate the domains")?;
    if status != OrderStatus::Ready {
        bail!("the CA refused the order ({status:?}): {}", validation_errors(order).await);
    }

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| anyhow!("generating the key: {e}"))?;
    let mut params = CertificateParams::new(acme.settings.domains.clone()).map_err(|e| anyhow!("{e}"))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| anyhow!("making the CSR: {e}"))?;
    order.finalize_csr(csr.der()).await.context("finalizing the order")?;
    let chain_pem = order
        .poll_certificate(&RetryPolicy::new().initial_delay(Duration::from_millis(250)).timeout(ISSUE_TIMEOUT))
        .await
        .context("downloading the certificate")?;
    Ok(Issued { chain_pem, key_pem: key.serialize_pem() })
}

/// What the CA said about the challenges of a refused order.
async fn validation_errors(order: &mut instant_acme::Order) -> String {
    let mut out = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let Ok(mut authz) = authz else { continue };
        let domain = authz.identifier().to_string();
        if let Ok(state) = authz.refresh().await {
            for c in &state.challenges {
                if let Some(problem) = &c.error {
                    out.push(format!("{domain}: {problem}"));
                }
            }
        }
    }
    if out.is_empty() { "no details".into() } else { out.join("; ") }
}
