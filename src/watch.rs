//! File events: watch the directories of managed files (not the files, since
//! a symlink swap shows up only as an event on the directory) and tell the
//! engine which credentials to re-check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use crate::engine::{owners_of, Handle};

/// Events within this window are folded into one re-check.
const DEBOUNCE: Duration = Duration::from_millis(100);

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
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Watch `dirs` (directory → credentials with files in it). Directories that
/// do not exist are created first (0755), so the watch can be set.
pub fn spawn(dirs: BTreeMap<PathBuf, Vec<String>>, handle: Handle) -> Result<Watcher, WatchError> {
    let map = dirs.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
        let Ok(events) = res else { return };
        let mut names: Vec<&String> = Vec::new();
        for ev in &events {
            for p in &ev.paths {
                for n in owners_of(&map, p) {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
        }
        handle.files_changed(names);
    })
    .map_err(|source| WatchError::Watch {
        dir: PathBuf::new(),
        source,
    })?;
    for dir in dirs.keys() {
        if !dir.exists() {
            let _ = std::fs::create_dir_all(dir);
        }
        debouncer
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                dir: dir.clone(),
                source,
            })?;
    }
    Ok(Watcher {
        _debouncer: debouncer,
    })
}
