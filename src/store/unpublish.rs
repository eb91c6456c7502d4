//! Removing a retired credential's published files.

use std::path::PathBuf;

use super::dirs::{Dir, Pins};
use super::publish::{base_name, DATA, DATA_TMP, GEN_PREFIX};
use super::{StoreError, SwapMode, Target};
use crate::fs::ops;

/// Remove every target (and, for a symlink swap, `..data` and the
/// generation directories beside them); returns the paths removed. Only in
/// the directories `pins` holds: one that was replaced is refused
/// ([`StoreError::DirectoryReplaced`]) and nothing in it is removed.
pub fn unpublish(
    targets: &[Target],
    swap: SwapMode,
    pins: &Pins,
) -> Result<Vec<PathBuf>, StoreError> {
    super::blocking(|| unpublish_now(targets, swap, pins))
}

// The blocking body of the function above.
fn unpublish_now(
    targets: &[Target],
    swap: SwapMode,
    pins: &Pins,
) -> Result<Vec<PathBuf>, StoreError> {
    let mut dirs: Vec<Dir> = Vec::new();
    let mut removed = Vec::new();
    for t in targets {
        let path = ops::parent_dir(&t.path);
        let i = match dirs.iter().position(|d| d.path() == path) {
            Some(i) => i,
            None => match pins.open_existing(&path)? {
                Some(d) => {
                    dirs.push(d);
                    dirs.len() - 1
                }
                None => continue, // no directory, no files
            },
        };
        let name = base_name(t)?;
        // A directory at a target path is not ours to delete.
        if dirs[i].lstat(name)?.is_none() || dirs[i].is_dir(name)? {
            continue;
        }
        dirs[i].unlink(name)?;
        removed.push(t.path.clone());
    }
    if swap == SwapMode::Symlink {
        // Config validation puts all files of a symlink swap in one directory.
        if let Some(dir) = dirs.first() {
            for name in dir.names()? {
                if name == DATA || name == DATA_TMP || name.starts_with(GEN_PREFIX) {
                    dir.remove(&name)?;
                }
            }
        }
    }
    for d in &dirs {
        d.fsync().ok();
    }
    Ok(removed)
}
