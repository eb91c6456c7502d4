//! What a kind of credential is ([`Kind`]) and the steps it implements on
//! its task ([`Steps`]), in the order of a rotation.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{de::DeserializeOwned, Serialize};

use super::RotateError;
use crate::alert::Alert;
use crate::audit::{AuditEvent, AuditOutcome, Entry};
use crate::config::{Share, VerifyConfig};
use crate::engine::retire::RevokeStep;
use crate::handoff::{Generation, HandoffError, Verdict};
use crate::status::CredentialStatus;
use crate::store::StoreError;

/// What sets a kind of credential apart: its config, its issuer, what its
/// journal holds and what its task keeps in memory besides the shared state.
pub(in crate::engine) trait Kind: Sized + Send + Sync + 'static {
    /// `kind` in status, alerts, metrics, audit records and log spans.
    const LABEL: &'static str;
    /// Its configuration.
    type Config: Send + Sync;
    /// What issues (and revokes) it.
    type Issuer: ?Sized + Send + Sync;
    /// What its journal holds, in the kind's own format (`journal.json`).
    type Journal: Journaled;
    /// What only this kind's task keeps.
    type Own: Send + Sync;

    /// The credential's name.
    fn name(cfg: &Self::Config) -> &str;
    /// The issuer's name, as configured.
    fn issuer_name(cfg: &Self::Config) -> &str;
    /// How its handoff is verified.
    fn verify(cfg: &Self::Config) -> &VerifyConfig;
}

/// What the shared steps need of a kind's journal.
pub(in crate::engine) trait Journaled:
    Default + Serialize + DeserializeOwned + Send + Sync
{
    /// Hand out the next generation number (numbers are never reused).
    fn allocate(&mut self) -> u64;
    /// When the issuer was asked (Unix seconds, oldest first): the
    /// credential's issuance-budget ledger, saved with the journal.
    fn issuances(&self) -> &[u64];
    /// The same ledger, to count in.
    fn issuances_mut(&mut self) -> &mut Vec<u64>;
}

/// A moment of the handoff a kind may record or mark (audit records, crash
/// points, its own bookkeeping); see [`Task::reload_and_verify`].
pub(in crate::engine) enum Moment<'a> {
    /// The app is about to be told.
    BeforeReload,
    /// Telling the app returned this.
    Told(&'a Result<(), HandoffError>),
    /// A first generation is published but the app could not be told (it
    /// may not run yet): not a failed handoff.
    ReloadMissed(&'a HandoffError),
    /// The app was told; the probes are about to run.
    BeforeVerify,
    /// The verdict, and how long publish → verdict took.
    Judged(&'a Verdict),
}

/// The steps a kind implements on its task, in the order of a rotation.
/// [`Task`]'s shared code drives them; none of them publishes status or
/// counts a failure (the driver does).
pub(in crate::engine) trait Steps: Send {
    /// A new generation, issued and validated, with its secret material,
    /// on its way through stage, publish and handoff.
    type Issued: Send;
    /// What a failed publish or handoff puts back, read before publishing.
    type Previous: Send;

    /// Recover what a crash interrupted (the journal says what), load or
    /// adopt the committed generation, repair the published files.
    fn start(&mut self) -> impl Future<Output = ()> + Send;
    /// When the next rotation is due (a pending retry wins).
    fn due_at(&self, now: SystemTime) -> SystemTime;
    /// The kind's other timers: the earliest one, if any.
    fn wake_at(&self) -> Option<SystemTime>;
    /// Timed work done each time round the loop (date alerts, revocations owed).
    fn tick(&mut self, now: SystemTime) -> impl Future<Output = ()> + Send;
    /// A timer from [`Steps::wake_at`] fired.
    fn on_wake(&mut self, now: SystemTime) -> impl Future<Output = ()> + Send;
    /// Re-check the published files and put the committed generation back
    /// when they drifted.
    fn check_files(&mut self, why: &str) -> impl Future<Output = ()> + Send;
    /// Whether what is due is only a republish of the committed generation
    /// (a new trust bundle or keystore), not a new issuance.
    fn refresh_due(&self, now: SystemTime) -> bool;
    /// That republish (see [`Steps::refresh_due`]).
    fn refresh(&mut self) -> impl Future<Output = Result<(), RotateError>> + Send;

    /// Before asking the issuer: hand over again what an earlier rotation
    /// staged, when it waits and the kind keeps one (`Some`: the rotation's
    /// result). `held_back`: the budget refused a new issuance.
    fn retry_staged(
        &mut self,
        reissue: bool,
        held_back: bool,
    ) -> impl Future<Output = Option<Result<(), RotateError>>> + Send;
    /// Journal that generation `g` is being issued (with the budget's count).
    fn begin(&mut self, g: u64) -> Result<(), RotateError>;
    /// Ask the issuer for generation `g` and validate the answer.
    fn issue(&mut self, g: u64) -> impl Future<Output = Result<Self::Issued, RotateError>> + Send;
    /// Forget generation `g`, whose issuance failed.
    fn abandon(&mut self, g: u64);
    /// Write the new generation into the state dir.
    fn stage(&mut self, next: &mut Self::Issued) -> Result<(), RotateError>;
    /// Read what a failed publish or handoff puts back.
    fn previous(&mut self) -> Self::Previous;
    /// Publish the new generation to the app's files (journaled); on
    /// failure put `previous` back.
    fn publish(
        &mut self,
        next: &mut Self::Issued,
        previous: &Self::Previous,
    ) -> impl Future<Output = Result<(), RotateError>> + Send;
    /// What reload and probes are told about the new generation (an API
    /// key's secret moves into it).
    fn generation(&self, next: &mut Self::Issued) -> Generation;
    /// Record or mark a moment of the handoff.
    fn at(&mut self, moment: Moment<'_>, gen: &Generation);
    /// Make the new generation the committed one: the app serves it
    /// (`Verified`), nothing can tell (`Unverified`), or it is the first
    /// and the app does not run yet (`Unreachable`, the handoff stays
    /// pending).
    fn commit(
        &mut self,
        next: Self::Issued,
        gen: &Generation,
        verdict: Verdict,
        previous: Self::Previous,
    ) -> impl Future<Output = ()> + Send;
    /// The app did not take the new generation: roll back to `previous`
    /// when the config allows and it is valid, alert, and say why.
    fn roll_back(
        &mut self,
        next: Self::Issued,
        gen: Generation,
        why: String,
        served: Option<String>,
        previous: Self::Previous,
    ) -> impl Future<Output = Result<(), RotateError>> + Send;

    /// How long to wait before the next attempt after `e`.
    fn backoff(&mut self, e: &RotateError, now: SystemTime) -> Duration;
    /// A staged generation waits for its handoff (rotate callers that came
    /// late get one more handoff attempt rather than this outcome).
    fn staged_waits(&self) -> bool;
    /// The committed generation and its fingerprint.
    fn committed(&self) -> Option<(u64, String)>;
    /// The committed generation's validity, if it is usable now.
    fn validity(&self, now: SystemTime) -> Option<(SystemTime, SystemTime)>;
    /// The committed generation's validity, usable or not.
    fn dates(&self) -> Option<(SystemTime, SystemTime)>;
    /// The lifetime that paces budgets and backoff.
    fn lifetime(&self) -> Duration;
    /// `renew_before` and the renewal jitter, for the default budget.
    fn renewal(&self) -> (Share, Share);
    /// Add what this kind knows about the committed generation to an alert.
    fn describe(&self, a: &mut Alert);
    /// Fill the kind's own fields of its status entry.
    fn status_fields(&self, s: &mut CredentialStatus);
    /// How this kind's messages name things (see [`Words`]).
    fn words(&self) -> &'static Words;

    /// Retire: revoke the committed generation at the issuer.
    fn revoke_all(&mut self) -> impl Future<Output = RevokeStep> + Send;
    /// Retire: revoke what else is owed (an API key's older keys); what
    /// could not be revoked, said for the outcome's detail.
    fn revoke_rest(&mut self) -> impl Future<Output = String> + Send;
    /// Retire: remove the app's files (and the kind's staged copies).
    fn remove_files(&mut self) -> Result<Vec<PathBuf>, StoreError>;
    /// Retire: forget the committed generation (the task stops next).
    fn forget(&mut self);
    /// An audit record of the committed generation, for `event` with `outcome`.
    fn entry(&self, event: AuditEvent, outcome: AuditOutcome) -> Entry;
}

/// How a kind's messages name its credential (log lines and errors).
pub(in crate::engine) struct Words {
    /// "credential" or "key": what stays in place after a failed rotation.
    pub current: &'static str,
    /// What a failed handoff left: rolled back, or not.
    pub rolled_back: &'static str,
    pub kept: &'static str,
    /// What the retry after a failed handoff does.
    pub retry: &'static str,
    /// The budget's override, and what `recovered` says when it frees up.
    pub in_place: &'static str,
    pub issue_anyway: &'static str,
    pub budget_freed: &'static str,
    /// The log line of a retirement.
    pub retired: &'static str,
}
