//! File watching for `rekey run`: the managed files' directories (created
//! when missing) and the watched files' (skipped when missing).

use crate::engine::Engine;
use crate::monitor::Monitor;

/// Watch the directories of every managed file; a failure only loses the
/// fast path (the backstop re-check still runs).
pub(super) fn watch_files(engine: &Engine) -> Option<crate::watch::Watcher> {
    match crate::watch::spawn(engine.watched_dirs(), engine.handle()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "file watching is off");
            None
        }
    }
}

/// Watch the directories of every watched file; never creates one, and
/// skips those that cannot be watched (the re-read at every backstop
/// covers them).
pub(super) fn watch_watches(monitor: &Monitor) -> Option<crate::watch::Watcher> {
    let dirs = monitor.watched_dirs();
    if dirs.is_empty() {
        return None;
    }
    let handle = monitor.handle();
    let on_change = move |names: &std::collections::BTreeSet<String>| handle.files_changed(names);
    match crate::watch::spawn_with(dirs, crate::watch::Missing::Skip, on_change) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "file watching for [[watch]] entries is off; they are re-read at every backstop");
            None
        }
    }
}
