//! Removing a retired credential's published files.

use std::fs;
use std::path::{Path, PathBuf};

use super::fsutil;
use super::publish::{DATA, DATA_TMP, GEN_PREFIX};
use super::{StoreError, SwapMode, Target};

/// Remove every target (and, for a symlink swap, `..data` and the
/// generation directories beside them); returns the paths removed.
pub fn unpublish(targets: &[Target], swap: SwapMode) -> Result<Vec<PathBuf>, StoreError> {
    let mut removed = Vec::new();
    for t in targets {
        if fs::symlink_metadata(&t.path).is_ok() {
            // A directory at a target path is not ours to delete.
            if fs::symlink_metadata(&t.path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            fs::remove_file(&t.path).map_err(|e| StoreError::io("remove", &t.path, e))?;
            removed.push(t.path.clone());
        }
    }
    if swap == SwapMode::Symlink {
        // Config validation puts all files of a symlink swap in one directory.
        if let Some(dir) = targets.first().and_then(|t| t.path.parent()) {
            remove_generations(dir)?;
        }
    }
    for dir in targets.iter().filter_map(|t| t.path.parent()) {
        fsutil::fsync_dir(dir).ok();
    }
    Ok(removed)
}

fn remove_generations(dir: &Path) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(_) => return Ok(()),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == DATA || name == DATA_TMP || name.starts_with(GEN_PREFIX) {
            fsutil::remove_any(&entry.path())?;
        }
    }
    Ok(())
}
