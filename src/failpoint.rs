//! Named crash points for the fault suite (`tests/faults_crash.rs`).
//!
//! `failpoint!("publish.swap.before")` marks a moment in a rotation. Built
//! with the `failpoints` cargo feature, a process started with
//! `REKEY_FAILPOINT=NAME` (or `NAME:N`, the N-th time that point is reached)
//! sends itself SIGKILL there: exactly what `kill -9` or a power cut does, so
//! no destructor, flush or `Drop` runs. Without the feature the macro expands
//! to nothing, so release builds carry no trace of it.
//!
//! [`POINTS`] lists every point; a test checks it against the source so the
//! suite cannot silently miss a newly added point.

/// Every failpoint in the source, in rotation order.
pub const POINTS: &[&str] = &[
    "keygen.before",
    "keygen.after",
    "issue.before",
    "issue.after",
    "validate.before",
    "validate.after",
    "stage.before",
    "stage.file",
    "stage.rename",
    "stage.after",
    "replace.rename",
    "publish.before",
    "publish.file",
    "publish.rename",
    "publish.fsync",
    "publish.gen_dir",
    "publish.swap.before",
    "publish.swap.after",
    "publish.link",
    "publish.after",
    "reload.before",
    // Handoff groups (src/engine/group.rs): the one reload of a batch, for
    // new generations or for members putting their old one back.
    "group.reload.before",
    "group.reload.after",
    "group.rollback.before",
    "group.rollback.after",
    "reload.after",
    "verify.before",
    "verify.after",
    "commit.before",
    "commit.after",
    "rollback.before",
    "rollback.after",
    "revoke.before",
    "revoke.after",
    // API keys (src/engine/apikey/rotate.rs).
    "apikey.mint.after",
    "apikey.publish.after",
];

/// Mark a crash point (see the module docs). Compiles to nothing without
/// the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        $crate::failpoint::hit($name)
    };
}

/// Mark a crash point (see the module docs). Compiles to nothing without
/// the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {};
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// The armed point and on which hit it fires, read once from the environment.
    fn armed() -> Option<&'static (String, u64)> {
        static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = std::env::var("REKEY_FAILPOINT").ok()?;
                let (name, nth) = match spec.rsplit_once(':') {
                    Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
                    None => (spec, 1),
                };
                Some((name, nth.max(1)))
            })
            .as_ref()
    }

    /// Die here when `name` is the armed point and this is its N-th hit.
    pub fn hit(name: &str) {
        static HITS: AtomicU64 = AtomicU64::new(0);
        let Some((armed, nth)) = armed() else { return };
        if armed != name {
            return;
        }
        if HITS.fetch_add(1, Ordering::SeqCst) + 1 != *nth {
            return;
        }
        // One unbuffered write so the test can tell which point fired.
        eprintln!("rekey: failpoint {name} (hit {nth}): SIGKILL");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
        // SIGKILL cannot be caught; abort is only a fallback that also skips destructors.
        std::process::abort();
    }
}

#[cfg(feature = "failpoints")]
pub use armed::hit;

#[cfg(test)]
mod tests {
    /// Every `failpoint!` in the source is listed in POINTS and the other way
    /// round, so the crash suite covers each one.
    #[test]
    fn points_match_the_source() {
        fn scan(dir: &std::path::Path, found: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    scan(&p, found);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("failpoint.rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for part in text.split("failpoint!(\"").skip(1) {
                        found.push(part.split('"').next().unwrap().to_string());
                    }
                }
            }
        }
        let mut found = Vec::new();
        scan(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        for p in &found {
            assert!(super::POINTS.contains(&p.as_str()), "{p} is not in POINTS");
        }
        for p in super::POINTS {
            assert!(
                found.iter().any(|f| f == p),
                "{p} is in POINTS but not in the source"
            );
        }
    }
}
