//! The handoff: tell the application (reload) and prove it now serves the
//! new generation (verify). Backends never import the engine; the engine
//! knows only [`Reload`] and [`Probe`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;

use crate::config::FileKind;
use crate::timestamp::Timestamp;

pub mod probe;
pub mod reload;
pub mod starttls;

/// First pause between probes: probing starts within milliseconds of the reload.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Pauses grow gently up to this.
const MAX_PAUSE: Duration = Duration::from_millis(250);
/// While settling, probes run at least this often.
const SETTLE_PAUSE: Duration = Duration::from_millis(25);

/// An API key's secret, handed only to probe headers; never printed.
#[derive(Clone, Default)]
pub struct Secret(pub std::sync::Arc<zeroize::Zeroizing<String>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a reload or probe needs to know about the generation being handed over.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Credential name.
    pub credential: String,
    /// Generation number.
    pub generation: u64,
    /// `sha256:` of the leaf.
    pub fingerprint: String,
    /// Serial, hex.
    pub serial: String,
    /// End of validity (`REKEY_NOT_AFTER`, RFC 3339 UTC to the second).
    pub not_after: Timestamp,
    /// Published files.
    pub files: Vec<(FileKind, PathBuf)>,
    /// An API key's id (`{key_id}`, `REKEY_KEY_ID`).
    pub key_id: Option<String>,
    /// An API key's secret, for `{secret}` in probe headers only.
    pub secret: Option<Secret>,
    /// Every credential one reload of a handoff group covers, when there are
    /// several; the per-credential fields then describe none of them.
    pub members: Vec<String>,
}

impl Default for Generation {
    /// No generation: the stand-in for a group reload's batch, whose
    /// per-credential fields describe none of its members (its `env` carries
    /// only `REKEY_CREDENTIALS`), and for tests. Its `not_after` is the epoch.
    fn default() -> Generation {
        Generation {
            credential: String::new(),
            generation: 0,
            fingerprint: String::new(),
            serial: String::new(),
            not_after: Timestamp::new(UNIX_EPOCH),
            files: Vec::new(),
            key_id: None,
            secret: None,
            members: Vec::new(),
        }
    }
}

impl Generation {
    /// The `REKEY_*` environment handed to reload and probe commands. A
    /// reload of several credentials at once gets `REKEY_CREDENTIALS` (their
    /// names, space-separated) instead of one credential's details, which
    /// would name only one of them.
    pub fn env(&self) -> Vec<(String, String)> {
        if self.members.len() > 1 {
            return vec![("REKEY_CREDENTIALS".to_string(), self.members.join(" "))];
        }
        let mut env = vec![
            ("REKEY_CREDENTIAL".to_string(), self.credential.clone()),
            ("REKEY_GENERATION".to_string(), self.generation.to_string()),
            ("REKEY_FINGERPRINT".to_string(), self.fingerprint.clone()),
            ("REKEY_SERIAL".to_string(), self.serial.clone()),
            ("REKEY_NOT_AFTER".to_string(), self.not_after.to_string()),
        ];
        if let Some(id) = &self.key_id {
            env.push(("REKEY_KEY_ID".to_string(), id.clone()));
        }
        for (kind, path) in &self.files {
            env.push((
                format!("REKEY_FILE_{}", kind.as_str().to_ascii_uppercase()),
                path.display().to_string(),
            ));
        }
        env
    }

    /// Fill `{fingerprint}` / `{serial}` in a probe template.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{fingerprint}", &self.fingerprint)
            .replace("{serial}", &self.serial)
            .replace("{key_id}", self.key_id.as_deref().unwrap_or(""))
    }

    /// Fill a probe header: like [`Generation::fill`], plus `{secret}`.
    pub fn fill_header(&self, template: &str) -> String {
        let v = self.fill(template);
        match &self.secret {
            Some(s) => v.replace("{secret}", s.0.as_str()),
            None => v,
        }
    }
}

/// Why a reload failed. Messages say which credential, what and why.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandoffError {
    /// A signal could not be sent.
    #[error("reload of {credential}: {why}")]
    Signal {
        /// Credential.
        credential: String,
        /// What went wrong and what to do.
        why: String,
    },
    /// The pid file could not be read, did not hold a usable pid, or names a
    /// process rekey must not or cannot signal.
    #[error("reload of {credential}: reload.pid_file {}: {why}", path.display())]
    PidFile {
        /// Credential.
        credential: String,
        /// The pid file.
        path: PathBuf,
        /// What went wrong and what to do.
        why: String,
    },
    /// A reload command failed.
    #[error("reload of {credential}: {why}")]
    Exec {
        /// Credential.
        credential: String,
        /// Exit status / timeout and stderr tail.
        why: String,
    },
    /// A reload request got no complete answer.
    #[error("reload of {credential}: {method} {url}: {source}")]
    Http {
        /// Credential.
        credential: String,
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// What failed (connection, TLS, deadline...).
        #[source]
        source: crate::net::httpc::HttpError,
    },
    /// A reload request was answered with a status other than 2xx.
    #[error("reload of {credential}: {method} {url} answered HTTP {status}; expected 2xx")]
    HttpStatus {
        /// Credential.
        credential: String,
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The one reload of a handoff group did not run.
    #[error("reload of {credential}: {why}")]
    Group {
        /// Credential.
        credential: String,
        /// What stopped it.
        why: String,
    },
}

/// Tells the application to pick up new files.
#[async_trait]
pub trait Reload: Send + Sync {
    /// Reload for `generation`.
    async fn reload(&self, generation: &Generation) -> Result<(), HandoffError>;
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The application uses the generation asked about.
    Serving,
    /// It answered, but with something else.
    Other {
        /// The fingerprint it served, when known.
        served: Option<String>,
        /// What was seen.
        detail: String,
    },
    /// It could not be reached.
    Unreachable(String),
}

/// Checks whether the application uses a generation.
#[async_trait]
pub trait Probe: Send + Sync {
    /// Look once.
    async fn probe(&self, generation: &Generation) -> Observation;
    /// For messages: `tls 127.0.0.1:8443`.
    fn describe(&self) -> String;
}

/// The outcome of waiting for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every probe saw the generation for the whole settle period.
    Verified,
    /// There are no probes (`verify = none`).
    Unverified,
    /// No probe ever reached the application.
    Unreachable(String),
    /// The application answered but did not show the generation in time.
    Failed {
        /// What it served, when known.
        served: Option<String>,
        /// What the probe saw.
        detail: String,
    },
}

/// Probe until every probe has seen `generation` continuously for `settle`,
/// or `timeout` passes. With `give_up_if_unreachable`, return at once when
/// the first round reaches nothing (bootstrap: the app may not run yet).
pub async fn await_generation(
    probes: &[Arc<dyn Probe>],
    generation: &Generation,
    timeout: Duration,
    settle: Duration,
    give_up_if_unreachable: bool,
) -> Verdict {
    if probes.is_empty() {
        return Verdict::Unverified;
    }
    let start = Instant::now();
    let deadline = start + timeout;
    let mut pause = FIRST_PAUSE;
    let mut since: Option<Instant> = None;
    let mut reached = false;
    let mut first_round = true;
    loop {
        let mut failing = None;
        for p in probes {
            let seen = p.probe(generation).await;
            if seen != Observation::Serving {
                failing = Some((p.describe(), seen));
                break;
            }
        }
        let now = Instant::now();
        match &failing {
            None => {
                reached = true;
                let t0 = *since.get_or_insert(now);
                if now.duration_since(t0) >= settle {
                    return Verdict::Verified;
                }
            }
            Some((_, Observation::Unreachable(_))) => since = None,
            Some(_) => {
                reached = true;
                since = None;
            }
        }
        if first_round && give_up_if_unreachable && !reached {
            if let Some((what, Observation::Unreachable(why))) = failing {
                return Verdict::Unreachable(format!("{what}: {why}"));
            }
        }
        first_round = false;
        if now >= deadline {
            return match failing {
                Some((what, Observation::Unreachable(why))) if !reached => {
                    Verdict::Unreachable(format!("{what}: {why}"))
                }
                Some((what, Observation::Other { served, detail })) => Verdict::Failed {
                    served,
                    detail: format!("{what}: {detail} after {timeout:?}"),
                },
                Some((what, Observation::Unreachable(why))) => Verdict::Failed {
                    served: None,
                    detail: format!("{what}: {why} after {timeout:?}"),
                },
                // Still settling at the deadline: it is serving; call it verified.
                _ => Verdict::Verified,
            };
        }
        let wait = if since.is_some() {
            pause.min(SETTLE_PAUSE)
        } else {
            pause
        };
        tokio::time::sleep(wait.min(deadline - now)).await;
        pause = (pause * 3 / 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serves the old generation for `flip_after` probes, then the new one.
    struct Scripted {
        calls: AtomicUsize,
        script: Vec<Observation>,
    }

    #[async_trait]
    impl Probe for Scripted {
        async fn probe(&self, _g: &Generation) -> Observation {
            let i = self.calls.fetch_add(1, Ordering::SeqCst);
            self.script[i.min(self.script.len() - 1)].clone()
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn generation() -> Generation {
        Generation {
            credential: "web".into(),
            generation: 2,
            fingerprint: "sha256:new".into(),
            serial: "01".into(),
            not_after: Timestamp::parse("2030-01-01T00:00:00Z").unwrap(),
            files: vec![],
            ..Generation::default()
        }
    }

    fn other() -> Observation {
        Observation::Other {
            served: Some("sha256:old".into()),
            detail: "serves sha256:old".into(),
        }
    }

    fn probe(script: Vec<Observation>) -> Arc<dyn Probe> {
        Arc::new(Scripted {
            calls: AtomicUsize::new(0),
            script,
        })
    }

    #[tokio::test]
    async fn verified_only_after_a_settle_period_of_consistent_answers() {
        // Old workers answer now and then right after a reload.
        let p = probe(vec![
            other(),
            Observation::Serving,
            other(),
            Observation::Serving,
        ]);
        let t = Instant::now();
        let v = await_generation(
            &[p],
            &generation(),
            Duration::from_secs(5),
            Duration::from_millis(100),
            false,
        )
        .await;
        assert_eq!(v, Verdict::Verified);
        assert!(t.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_wrong_certificate_until_the_deadline_fails_naming_what_was_served() {
        let v = await_generation(
            &[probe(vec![other()])],
            &generation(),
            Duration::from_millis(200),
            Duration::ZERO,
            false,
        )
        .await;
        match v {
            Verdict::Failed { served, detail } => {
                assert_eq!(served.as_deref(), Some("sha256:old"));
                assert!(detail.contains("scripted"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bootstrap_gives_up_at_once_when_nothing_answers() {
        let p = probe(vec![Observation::Unreachable("connection refused".into())]);
        let t = Instant::now();
        let v = await_generation(
            &[p],
            &generation(),
            Duration::from_secs(30),
            Duration::ZERO,
            true,
        )
        .await;
        assert!(matches!(v, Verdict::Unreachable(_)), "{v:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn no_probes_is_unverified_never_verified() {
        let v = await_generation(
            &[],
            &generation(),
            Duration::from_secs(1),
            Duration::ZERO,
            false,
        )
        .await;
        assert_eq!(v, Verdict::Unverified);
    }

    #[test]
    fn a_reload_of_several_credentials_names_them_all_and_no_one_file() {
        let mut g = generation();
        g.files.push((FileKind::Cert, "/x/cert.pem".into()));
        g.members = vec!["a".into(), "b".into()];
        assert_eq!(
            g.env(),
            vec![("REKEY_CREDENTIALS".to_string(), "a b".to_string())]
        );
    }

    #[test]
    fn environment_and_templates() {
        let mut g = generation();
        // A leaf's notAfter read with a fraction is still handed over to
        // the second, in UTC, as `rekey status` writes it.
        g.not_after = Timestamp::new(UNIX_EPOCH + Duration::from_millis(1_893_456_000_750));
        g.files.push((FileKind::Cert, "/x/cert.pem".into()));
        g.key_id = Some("k-1".into());
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            g.env(),
            pairs(&[
                ("REKEY_CREDENTIAL", "web"),
                ("REKEY_GENERATION", "2"),
                ("REKEY_FINGERPRINT", "sha256:new"),
                ("REKEY_SERIAL", "01"),
                ("REKEY_NOT_AFTER", "2030-01-01T00:00:00Z"),
                ("REKEY_KEY_ID", "k-1"),
                ("REKEY_FILE_CERT", "/x/cert.pem"),
            ])
        );
        assert_eq!(g.fill("fp={fingerprint} s={serial}"), "fp=sha256:new s=01");
    }
}
