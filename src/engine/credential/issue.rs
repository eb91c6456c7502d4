//! Asking the issuer: the issuance budget first (counted when the issuer is
//! asked, given back when it issued nothing), then the key made locally,
//! only the CSR sent, and the answer validated before anything touches the
//! application.

use std::time::SystemTime;

use super::Task;
use crate::alert::{Alert, Event};
use crate::cert::{self, CertInfo, IssuedPem};
use crate::engine::budget::{unix, Budgets, Taken};
use crate::engine::rotate::RotateError;
use crate::issuer::IssueRequest;
use crate::metrics;
use crate::store::Material;

impl Task {
    /// The budgets of this credential, for one check. The default
    /// per-credential budget follows the lifetime of the certificate in
    /// place (an ACME CA may grant 90 days whatever was asked), else the
    /// configured one.
    pub(in crate::engine) fn budgets(&self) -> Budgets<'_> {
        Budgets {
            credential: &self.cfg.name,
            kind: "certificate",
            issuer: &self.cfg.issuer,
            limits: self.budget,
            lifetime: self.lifetime(),
            renew_before: self.cfg.renew_before,
            jitter: self.cfg.jitter,
            issuer_ledger: self.issuer_ledger.as_deref(),
        }
    }

    /// The lifetime that paces budgets and backoff: the certificate in
    /// place, else the configured one.
    pub(in crate::engine) fn lifetime(&self) -> std::time::Duration {
        match &self.current {
            Some(c) => c.info.lifetime(),
            None => self.cfg.lifetime,
        }
    }

    /// Count an issuance at `now` against the budgets, or say why not. The
    /// count reaches the disk with the next journal save (the `Issuing`
    /// step); a refusal raises `budget_exhausted` once per episode.
    pub(in crate::engine) fn take_budget(&mut self, now: SystemTime) -> Result<u64, RotateError> {
        let current = self
            .current
            .as_ref()
            .filter(|c| self.usable(&c.info, now))
            .map(|c| (unix(c.info.not_before), unix(c.info.not_after)));
        let mut ledger = std::mem::take(&mut self.journal.issuances);
        let taken = self.budgets().take(&mut ledger, current, unix(now));
        self.journal.issuances = ledger;
        match taken {
            Taken::Counted { at, overridden } => {
                if let Some(which) = overridden {
                    tracing::warn!(budget = %which, event = "budget_override", "the issuance budget is used up, but the certificate in place is in the last tenth of its lifetime (or there is none): issuing anyway");
                }
                self.budget_blocked = None;
                Ok(at)
            }
            Taken::Blocked(b) => {
                tracing::warn!(budget = %b.budget, frees_at = %crate::timestamp::rfc3339(crate::engine::budget::at(b.frees_at)), event = "budget_exhausted", "{}", b.message);
                let frees = crate::engine::budget::at(b.frees_at);
                if self.budget_alerted.is_none() {
                    let mut a = Alert::new(
                        Event::BudgetExhausted,
                        &self.cfg.name,
                        "certificate",
                        b.message.clone(),
                    );
                    if let Some(c) = &self.current {
                        a.generation = Some(c.generation);
                        a.fingerprint = Some(c.info.fingerprint.clone());
                        a.not_after = Some(crate::timestamp::Timestamp::new(c.info.not_after));
                    }
                    self.alerter.raise(a);
                }
                self.budget_alerted = Some(self.budget_alerted.map_or(frees, |t| t.max(frees)));
                let err = RotateError::Budget {
                    message: b.message.clone(),
                    until: b.until,
                    frees_at: b.frees_at,
                };
                self.budget_blocked = Some(Box::new(b));
                Err(err)
            }
        }
    }

    /// The issuer issued nothing for the issuance counted at `at`.
    pub(in crate::engine) fn give_back_budget(&mut self, at: u64) {
        let mut ledger = std::mem::take(&mut self.journal.issuances);
        self.budgets().give_back(&mut ledger, at);
        self.journal.issuances = ledger;
    }

    /// Once the budget of the last `budget_exhausted` alert has freed up:
    /// say so (`recovered`), so the alert does not stay open.
    pub(in crate::engine) fn budget_freed(&mut self, now: SystemTime) {
        if self.budget_alerted.is_none_or(|t| t > now) {
            return;
        }
        self.budget_alerted = None;
        self.budget_blocked = None;
        self.alerter.raise(Alert::new(
            Event::Recovered,
            &self.cfg.name,
            "certificate",
            "the issuance budget allows issuance again",
        ));
        self.publish_status();
    }

    /// Generate the key locally, send only the CSR, validate the answer.
    pub(in crate::engine) async fn issue(
        &self,
        g: u64,
    ) -> Result<(Material, CertInfo, Option<String>), RotateError> {
        let key_type = self.cfg.key_type;
        let cert_err = |source| RotateError::Cert {
            credential: self.cfg.name.clone(),
            source,
        };
        // RSA keys take up to a second or two: keep them off the async workers.
        failpoint!("keygen.before");
        let key = tokio::task::spawn_blocking(move || cert::generate_key(key_type))
            .await
            .map_err(|e| {
                cert_err(cert::CertError::KeyGen {
                    key_type: key_type.as_str(),
                    reason: e.to_string(),
                })
            })?
            .map_err(cert_err)?;
        failpoint!("keygen.after");
        let csr_der = cert::build_csr(&key, &self.names()).map_err(cert_err)?;
        let req = IssueRequest {
            credential: self.cfg.name.clone(),
            csr_der,
            names: self.names(),
            lifetime: self.cfg.lifetime,
        };
        failpoint!("issue.before");
        let issued = self.issuer.issue(&req).await;
        failpoint!("issue.after");
        let result = if issued.is_ok() {
            metrics::SUCCESS
        } else {
            metrics::FAILURE
        };
        self.metrics.issuer_request(self.issuer.name(), result);
        let issued = issued?;
        // server_keygen: the issuer made the key, so the certificate must
        // match that one, and that one is installed.
        let key = match &issued.server_key {
            Some(k) => cert::load_key(&k.0, "the issuer's private key").map_err(cert_err)?,
            None => key,
        };
        let pem = IssuedPem {
            cert_pem: &issued.cert_pem,
            chain_pem: &issued.chain_pem,
            ca_pem: issued.ca_pem.as_deref(),
        };
        failpoint!("validate.before");
        let info = cert::validate_issued(&pem, &key.public_key(), &self.names(), SystemTime::now())
            .map_err(|why| RotateError::Invalid {
                credential: self.cfg.name.clone(),
                issuer: self.issuer.name().to_string(),
                why,
            })?;
        failpoint!("validate.after");
        tracing::debug!(generation = g, fingerprint = %info.fingerprint, "issued and validated");
        if let Some(why) = &issued.shortened {
            tracing::warn!(generation = g, not_after = %crate::timestamp::rfc3339(info.not_after), reason = %why, event = "shortened_by_ca", "the certificate is shorter than asked");
        }
        Ok((
            Material {
                cert_pem: issued.cert_pem,
                chain_pem: issued.chain_pem,
                key_pem: key.pem().clone(),
                ca_pem: issued.ca_pem,
                pkcs12: None,
            },
            info,
            issued.shortened,
        ))
    }
}
