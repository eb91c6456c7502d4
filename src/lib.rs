//! rekey: a credential-rotation sidecar. It renews each certificate and API
//! key before it expires, publishes it atomically, reloads the application,
//! proves the application serves the new one, and rolls back and alerts
//! when it does not.
//!
//! The modules read as the path a credential takes, and imports only run
//! down that path (the layers are in `src/layering.rs`, checked by its
//! tests).
//!
//! The public interface is:
//!
//! - [`config`]: the TOML file turned into validated types;
//! - [`cert`], [`budget`], [`schedule`], [`status`], [`certview`]: pure
//!   values and rules (keys and certificates, issuance budgets, renewal and
//!   backoff, the status snapshot, certificates as shown);
//! - [`store`]: every byte on disk (staging, atomic publish, the journal);
//! - [`issuer`], [`handoff`], [`alert`], [`audit`]: the backends behind
//!   their traits, and the audit log;
//! - [`engine`]: one task per credential, driving them;
//! - [`metrics`]: the Prometheus families;
//! - [`daemon`]: `rekey run`, wiring config to backends;
//! - [`net`]: the outbound HTTP client and TLS configs;
//! - [`fs`], [`keystore`], [`watched`]: types the interface above carries
//!   (file read errors, keystore errors, the monitor's view);
//! - [`cli`]: the subcommands, for the `rekey` binary;
//! - [`heap`], [`failpoint`]: process tuning for the binary, and the crash
//!   points of the fault suite.
//!
//! The rest (the command runner, the endpoint, the watchers, the admin
//! token, timestamps (`status::Timestamp` is the public name), log
//! formats and prefixes) is the crate's own.

// First, so `failpoint!` is in scope in every module below.
#[macro_use]
pub mod failpoint;

pub mod alert;
pub mod audit;
pub mod budget;
pub mod cert;
pub mod certview;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub(crate) mod exec;
pub mod fs;
pub mod handoff;
pub mod heap;
pub mod issuer;
pub(crate) mod journald;
pub mod keystore;
pub(crate) mod logfmt;
pub mod metrics;
pub(crate) mod monitor;
pub mod net;
pub mod schedule;
pub(crate) mod server;
pub mod status;
pub mod store;
pub(crate) mod timestamp;
pub(crate) mod token;
pub(crate) mod watch;
pub mod watched;

#[cfg(test)]
mod layering;
