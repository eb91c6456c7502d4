//! File events: watch the directories of managed and watched files (not the
//! files, since a symlink swap shows up only as an event on the directory)
//! and tell the engine which credentials, or the monitor which watches, to
//! re-check.
//!
//! Debouncing is done here rather than with notify-debouncer-full: that
//! crate's thread wakes on every tick even when nothing happens, which costs
//! idle CPU on every host. Here a timer is armed only after an event.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::engine::{owners_of, Handle};

/// Events within this window after the first one are folded into one re-check.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Errors setting up the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The OS watcher could not be created or a directory could not be watched.
    #[error("cannot watch {dir} for changes: {source}; tampering will only be noticed by the periodic re-check")]
    Watch {
        /// Directory.
        dir: PathBuf,
        /// Cause.
        source: notify::Error,
    },
}

/// Keeps the OS watcher alive; dropping it stops watching.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What to do about a directory that is missing or cannot be watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Create it (0755), then watch; any failure is an error. For managed
    /// files: rekey writes there anyway.
    Create,
    /// Leave it alone and skip it with a log line: for watched certificates,
    /// which rekey never writes. Their periodic re-read still sees the file
    /// once it appears.
    Skip,
}

/// Watch `dirs` (directory → credentials with files in it). Directories that
/// do not exist are created first (0755), so the watch can be set.
pub fn spawn(dirs: BTreeMap<PathBuf, Vec<String>>, handle: Handle) -> Result<Watcher, WatchError> {
    spawn_with(dirs, Missing::Create, move |names| {
        handle.files_changed(names.iter())
    })
}

/// Watch `dirs` (directory → names of what lives there) and call
/// `on_change` with the names whose directories saw events, debounced.
pub fn spawn_with(
    dirs: BTreeMap<PathBuf, Vec<String>>,
    missing: Missing,
    on_change: impl Fn(&BTreeSet<String>) + Send + 'static,
) -> Result<Watcher, WatchError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reads are events too (IN_OPEN/IN_ACCESS/IN_CLOSE_NOWRITE); our own
        // re-check reads the files, so reacting to them would loop forever.
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(ev.paths);
            }
        }
    })
    .map_err(|source| WatchError::Watch {
        dir: PathBuf::new(),
        source,
    })?;
    for dir in dirs.keys() {
        if missing == Missing::Create && !dir.exists() {
            let _ = std::fs::create_dir_all(dir);
        }
        let watched = watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                dir: dir.clone(),
                source,
            });
        match (watched, missing) {
            (Ok(()), _) => {}
            (Err(e), Missing::Create) => return Err(e),
            (Err(WatchError::Watch { source, .. }), Missing::Skip) => {
                tracing::info!(dir = %dir.display(), error = %source, names = ?dirs[dir], "not watching this directory for changes; re-reading at every backstop instead")
            }
        }
    }
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut names: BTreeSet<String> = BTreeSet::new();
            let mut add = |paths: Vec<PathBuf>| {
                for p in paths {
                    names.extend(owners_of(&dirs, &p).iter().cloned());
                }
            };
            add(first);
            let deadline = tokio::time::sleep(DEBOUNCE);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    more = rx.recv() => match more {
                        Some(paths) => add(paths),
                        None => return,
                    },
                }
            }
            tracing::debug!(names = ?names, "file events dispatched");
            on_change(&names);
        }
    });
    Ok(Watcher {
        _watcher: watcher,
        task,
    })
}
