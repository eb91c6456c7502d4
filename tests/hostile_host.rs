//! A hostile or careless host: what another user on the same machine (or a
//! container in the same pod) can do to rekey, against the real daemon.
//! Each scenario is a row of the scorecard (suite `hostile_host`).

mod common;

/// Files, paths, planted credentials, ownership.
#[path = "hostile_host/fs.rs"]
mod fs;
