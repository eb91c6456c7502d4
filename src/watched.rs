//! What the `[[watch]]` monitor publishes for the endpoint and the metrics:
//! the watches' status objects and the leaves of managed certificates.
//! Plain data, defined apart from the monitor so that metrics (which the
//! engine updates) need not import the monitor (which sees the engine).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::status::{CredentialStatus, WatchedCert};

/// What the monitor publishes: every watch's status object, and (with
/// compatibility metrics) the leaf details of each managed certificate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// Status objects with `kind = "watch"`, by name.
    pub watches: BTreeMap<String, CredentialStatus>,
    /// Managed certificates' leaves, by credential name.
    pub managed: BTreeMap<String, ManagedLeaf>,
}

/// The leaf a managed certificate publishes, as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedLeaf {
    /// The file holding it (`cert`, else `fullchain`, else `bundle`).
    pub path: PathBuf,
    /// What it says.
    pub cert: WatchedCert,
}
