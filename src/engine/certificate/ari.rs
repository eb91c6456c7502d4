//! The CA's suggested renewal window (ACME ARI) for the committed
//! certificate, kept in the journal with when to ask again.

use std::time::{Duration, SystemTime};

use super::Task;
use crate::engine::journal::Ari;
use crate::schedule;
use crate::timestamp;

/// Re-check an ARI window this often when the CA gives no Retry-After.
const ARI_RECHECK: Duration = Duration::from_secs(6 * 3600);
/// After a failed window fetch, try again after this (unless the CA said).
const ARI_RETRY: Duration = Duration::from_secs(3600);
/// Bounds on how often a window is re-checked.
const ARI_MIN_RECHECK: Duration = Duration::from_secs(60);
const ARI_MAX_RECHECK: Duration = Duration::from_secs(24 * 3600);

impl Task {
    /// Ask the issuer for its renewal window for the committed certificate
    /// (ACME ARI) and remember it in the journal, with when to ask again.
    pub(in crate::engine) async fn refresh_window(&mut self) {
        self.refresh_window_with(None).await;
    }

    /// [`Task::refresh_window`], with the committed certificate's PEM when
    /// the caller already holds it (start-up: reading it again for each of
    /// 10,000 credentials only churns the heap).
    pub(in crate::engine) async fn refresh_window_with(&mut self, known: Option<(u64, String)>) {
        let Some(cur) = &self.own.current else { return };
        let now = SystemTime::now();
        let pem = match known {
            Some((g, pem)) if g == cur.generation => Ok(pem),
            _ => self.committed_cert_pem(cur),
        };
        // A certificate that cannot be read back counts as a failed fetch:
        // keep the last window and try again later.
        let fetched = match pem {
            Ok(pem) => self
                .issuer
                .renewal_window(&pem)
                .await
                .map_err(|e| (e.retry_after(), e.to_string())),
            Err(e) => Err((None, e.to_string())),
        };
        let ari = match fetched {
            Ok(None) => None,
            Ok(Some(w)) => {
                let recheck = w
                    .retry_after
                    .unwrap_or(ARI_RECHECK)
                    .clamp(ARI_MIN_RECHECK, ARI_MAX_RECHECK);
                let recheck = schedule::ari_recheck(recheck, fastrand::f64());
                let valid = w.end > w.start;
                if !valid {
                    tracing::warn!("the CA's renewal window ends before it starts; ignoring it and keeping renew_before");
                }
                Some(Ari {
                    window: valid.then_some((w.start, w.end)),
                    recheck_at: now + recheck,
                })
            }
            Err((retry_after, e)) => {
                tracing::warn!(error = %e, "cannot fetch the renewal window; keeping the last one");
                let recheck = retry_after
                    .unwrap_or(ARI_RETRY)
                    .clamp(ARI_MIN_RECHECK, ARI_MAX_RECHECK);
                let recheck = schedule::ari_recheck(recheck, fastrand::f64());
                Some(Ari {
                    window: self.journal.ari.as_ref().and_then(|a| a.window),
                    recheck_at: now + recheck,
                })
            }
        };
        if ari != self.journal.ari.as_deref().copied() {
            if let Some(Ari {
                window: Some((start, end)),
                ..
            }) = ari
            {
                tracing::info!(window_start = %timestamp::rfc3339(start), window_end = %timestamp::rfc3339(end), "the CA suggests a renewal window");
            }
            self.journal.ari = ari.map(Box::new);
            self.save_and_prune();
        }
    }
}
