//! Placeholder: the config module is being written.
use serde::{Deserialize, Serialize};

/// How the files of a generation are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SwapMode {
    /// Per-file temp + fsync + rename + dir fsync.
    #[default]
    Rename,
    /// A `..data` symlink swap: all files flip at once.
    Symlink,
}
