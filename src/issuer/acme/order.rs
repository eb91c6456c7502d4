//! One order, start to finish: new order (with `replaces` when the CA has
//! ARI), answer the pending challenges, poll with backoff (no fixed sleeps),
//! finalize with the engine's CSR, download. `badNonce` is resent here on
//! top of instant-acme's own three tries, since a CA may reject many nonces.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeStatus, ChallengeType,
    Identifier, NewOrder, Order, OrderStatus, RevocationReason, RevocationRequest,
};

use super::account::{AccountFiles, NONCE_RETRIES};
use super::challenge::{Http01Listener, Pending, Solver};
use super::http::take_hints;
use super::{ari, is_bad_nonce, AcmeError, Ctx, Directory};
use crate::config::{AcmeConfig, ChallengeConfig};
use crate::issuer::{IssueRequest, Issued};

/// First wait between polls: validation against a local CA takes milliseconds.
const POLL_FIRST: Duration = Duration::from_millis(5);
/// Polls back off (x2) up to this, unless the CA asks for more with Retry-After.
const POLL_MAX: Duration = Duration::from_secs(1);
/// Give up on an order that is not ready or valid after this long.
const POLL_DEADLINE: Duration = Duration::from_secs(180);

/// Await `$call`, resending it while the CA answers `badNonce` (the request
/// was not processed, so resending is safe). `$map` turns the value into an
/// owned one so the borrow of the order ends with each try.
macro_rules! retry_nonce {
    ($call:expr) => {
        retry_nonce!($call, |v| v)
    };
    ($call:expr, $map:expr) => {{
        let mut tries = 0u32;
        loop {
            match $call.await.map($map) {
                Err(e) if is_bad_nonce(&e) && tries < NONCE_RETRIES => {
                    tries += 1;
                    take_hints();
                }
                other => break other,
            }
        }
    }};
}

/// Issue a certificate for `req` on `account`.
pub(super) async fn run(
    account: &Account,
    dir: &Directory,
    cfg: &AcmeConfig,
    listener: Option<&Http01Listener>,
    files: &AccountFiles,
    req: &IssueRequest,
    ctx: &Ctx<'_>,
) -> Result<Issued, AcmeError> {
    let ids: Vec<Identifier> = req
        .names
        .dns_names
        .iter()
        .map(|n| Identifier::Dns(n.clone()))
        .chain(req.names.ip_addresses.iter().map(|ip| Identifier::Ip(*ip)))
        .collect();
    let all = req.names.describe();
    // ARI's `replaces` needs renewalInfo in the directory (instant-acme refuses otherwise).
    let replaces = dir
        .renewal_info
        .as_ref()
        .and_then(|_| files.last_issued(&req.credential));
    let mut order = match new_order(account, &ids, replaces.as_deref(), &all, ctx).await {
        // A CA may refuse `replaces` (already replaced, unknown) or not echo
        // it back (instant-acme then fails the order): order without it.
        // Not when it is busy: that is for the engine's backoff.
        Err(e) if replaces.is_some() && !matches!(e, AcmeError::Busy { .. }) => {
            tracing::debug!(error = %e, "the order with `replaces` failed; ordering without it");
            new_order(account, &ids, None, &all, ctx).await?
        }
        other => other?,
    };
    let kind = match cfg.challenge {
        ChallengeConfig::Dns01 { .. } => ChallengeType::Dns01,
        _ => ChallengeType::Http01,
    };
    let mut solver = Solver::new(&cfg.challenge, listener);
    let result = validate_and_finalize(&mut order, &mut solver, kind, req, &all, ctx).await;
    solver.cleanup().await;
    let fullchain = result?;
    let (cert_pem, chain_pem) = split_chain(&fullchain)
        .ok_or_else(|| ctx.protocol("certificate", "the CA sent no PEM certificate".into()))?;
    if dir.renewal_info.is_some() {
        if let Ok(id) = ari::cert_id_pem(&cert_pem) {
            if let Err(e) = files.remember_issued(&req.credential, &id) {
                tracing::warn!(error = %e, "cannot remember the ARI id for `replaces`");
            }
        }
    }
    Ok(Issued {
        cert_pem,
        chain_pem,
        ca_pem: None,
        server_key: None,
        shortened: None,
    })
}

async fn new_order(
    account: &Account,
    ids: &[Identifier],
    replaces: Option<&str>,
    all: &str,
    ctx: &Ctx<'_>,
) -> Result<Order, AcmeError> {
    let mut new = NewOrder::new(ids);
    if let Some((aki, serial)) = replaces.and_then(|r| r.split_once('.')) {
        new = new.replaces(CertificateIdentifier {
            authority_key_identifier: Cow::Borrowed(aki),
            serial: Cow::Borrowed(serial),
        });
    }
    retry_nonce!(account.new_order(&new)).map_err(|e| ctx.acme("newOrder", Some(all), e))
}

/// Everything between "order created" and "certificate downloaded".
async fn validate_and_finalize(
    order: &mut Order,
    solver: &mut Solver<'_>,
    kind: ChallengeType,
    req: &IssueRequest,
    all: &str,
    ctx: &Ctx<'_>,
) -> Result<String, AcmeError> {
    if order.state().status == OrderStatus::Pending {
        let mut tries = 0;
        let pending = loop {
            match pending_challenges(order, &kind, ctx).await {
                Err(e) if is_bad_nonce(&e) && tries < NONCE_RETRIES => tries += 1,
                Err(e) => return Err(ctx.acme("authorization", Some(all), e)),
                Ok(p) => break p?,
            }
        };
        solver.present(&pending).await?;
        set_ready(order, &kind)
            .await
            .map_err(|e| ctx.acme("challenge", Some(all), e))?;
        let status = wait_while(order, OrderStatus::Pending, "validation", all, ctx).await?;
        if status == OrderStatus::Invalid {
            return Err(why_invalid(order, all, ctx).await);
        }
    }
    if order.state().status == OrderStatus::Ready {
        retry_nonce!(order.finalize_csr(&req.csr_der))
            .map_err(|e| ctx.acme("finalize", Some(all), e))?;
    }
    let status = wait_while(order, OrderStatus::Processing, "finalize", all, ctx).await?;
    if status != OrderStatus::Valid {
        return Err(match order.state().error.clone() {
            Some(p) => ctx.problem("finalize", Some(all), p),
            None => ctx.protocol("finalize", format!("the order ended {status:?}, not valid")),
        });
    }
    retry_nonce!(order.certificate())
        .map_err(|e| ctx.acme("certificate", Some(all), e))?
        .ok_or_else(|| {
            ctx.protocol(
                "certificate",
                "the order is valid but has no certificate".into(),
            )
        })
}

/// The challenges still to answer (authorizations already valid are skipped).
/// The outer error is a transport/protocol error (resent on `badNonce`).
async fn pending_challenges(
    order: &mut Order,
    kind: &ChallengeType,
    ctx: &Ctx<'_>,
) -> Result<Result<Vec<Pending>, AcmeError>, instant_acme::Error> {
    let mut out = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(a) = authzs.next().await {
        let mut a = a?;
        let id = a.identifier();
        let shown = id.to_string();
        let domain = match id.identifier {
            Identifier::Dns(d) => d.clone(),
            Identifier::Ip(ip) => ip.to_string(),
            _ => shown.clone(),
        };
        match a.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Ok(Err(AcmeError::Rejected {
                    directory: ctx.directory.to_string(),
                    step: "authorization",
                    identifier: shown,
                    kind: format!("{other:?}").to_lowercase(),
                    detail: "the authorization is not pending".into(),
                }))
            }
        }
        let offered: Vec<String> = a
            .challenges
            .iter()
            .map(|c| format!("{:?}", c.r#type))
            .collect();
        let Some(ch) = a.challenge(kind.clone()) else {
            return Ok(Err(AcmeError::Rejected {
                directory: ctx.directory.to_string(),
                step: "authorization",
                identifier: shown,
                kind: "unsupportedChallenge".into(),
                detail: format!(
                    "the CA does not offer {kind:?} here; it offers {}",
                    offered.join(", ")
                ),
            }));
        };
        let ka = ch.key_authorization();
        out.push(Pending {
            identifier: shown,
            domain,
            token: ch.token.clone(),
            key_auth: ka.as_str().to_string(),
            dns_value: ka.dns_value(),
        });
    }
    Ok(Ok(out))
}

/// Tell the CA every pending challenge is ready.
async fn set_ready(order: &mut Order, kind: &ChallengeType) -> Result<(), instant_acme::Error> {
    let mut authzs = order.authorizations();
    while let Some(a) = authzs.next().await {
        let mut a = a?;
        if a.status != AuthorizationStatus::Pending {
            continue;
        }
        let Some(mut ch) = a.challenge(kind.clone()) else {
            continue;
        };
        if ch.status == ChallengeStatus::Pending {
            retry_nonce!(ch.set_ready())?;
        }
    }
    Ok(())
}

/// Poll the order while it is `state`: first after a few ms, doubling up to
/// [`POLL_MAX`], or after the CA's `Retry-After` when it sends one.
async fn wait_while(
    order: &mut Order,
    state: OrderStatus,
    step: &'static str,
    all: &str,
    ctx: &Ctx<'_>,
) -> Result<OrderStatus, AcmeError> {
    let started = Instant::now();
    let mut delay = POLL_FIRST;
    loop {
        let status = order.state().status;
        if status != state {
            return Ok(status);
        }
        let asked = take_hints().retry_after;
        let wait = asked.unwrap_or(delay);
        if started.elapsed() + wait > POLL_DEADLINE {
            return Err(AcmeError::Timeout {
                directory: ctx.directory.to_string(),
                step,
                waited: started.elapsed(),
                retry_after: asked,
            });
        }
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(POLL_MAX);
        retry_nonce!(order.refresh(), |_| ()).map_err(|e| ctx.acme(step, Some(all), e))?;
    }
}

/// Why the order went invalid: the failed authorization's challenge error,
/// with its identifier.
async fn why_invalid(order: &mut Order, all: &str, ctx: &Ctx<'_>) -> AcmeError {
    let order_error = order.state().error.clone();
    let mut authzs = order.authorizations();
    while let Some(Ok(mut a)) = authzs.next().await {
        for _ in 0..=NONCE_RETRIES {
            match a.refresh().await {
                Err(e) if is_bad_nonce(&e) => continue,
                _ => break,
            }
        }
        if a.status == AuthorizationStatus::Invalid {
            let id = a.identifier().to_string();
            if let Some(p) = a.challenges.iter().find_map(|c| c.error.clone()) {
                return ctx.problem("validation", Some(&id), p);
            }
        }
    }
    match order_error {
        Some(p) => ctx.problem("validation", Some(all), p),
        None => ctx.protocol(
            "validation",
            "the order became invalid and the CA gave no reason".into(),
        ),
    }
}

/// Split the CA's PEM chain into (leaf, intermediates), keeping its bytes.
fn split_chain(fullchain: &str) -> Option<(String, String)> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = fullchain;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let end = rest[start..].find(END)? + start + END.len();
        blocks.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    let (leaf, chain) = blocks.split_first()?;
    Some((leaf.clone(), chain.concat()))
}

/// Revoke `cert_pem` as superseded.
/// Revoke the leaf of `cert_pem` (its first certificate) for `reason`.
pub(super) async fn revoke(
    account: &Account,
    cert_pem: &str,
    reason: RevocationReason,
    ctx: &Ctx<'_>,
) -> Result<(), AcmeError> {
    let certs = crate::cert::pem_certs(cert_pem.as_bytes(), "certificate")
        .map_err(|e| ctx.protocol("revokeCert", e.to_string()))?;
    let first = certs
        .first()
        .ok_or_else(|| ctx.protocol("revokeCert", "no certificate to revoke".into()))?;
    let req = RevocationRequest {
        certificate: first,
        reason: Some(reason),
    };
    retry_nonce!(account.revoke(&req)).map_err(|e| ctx.acme("revokeCert", None, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_leaf_and_chain() {
        let b = |n: &str| format!("-----BEGIN CERTIFICATE-----\n{n}\n-----END CERTIFICATE-----");
        let text = format!("{}\n\n{}\r\n{}\n", b("A"), b("B"), b("C"));
        let (leaf, chain) = split_chain(&text).unwrap();
        assert_eq!(leaf, format!("{}\n", b("A")));
        assert_eq!(chain, format!("{}\n{}\n", b("B"), b("C")));
        assert!(split_chain("nothing").is_none());
    }
}
