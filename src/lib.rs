//! rekey: a credential-rotation sidecar. See DESIGN.md for the architecture.

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
pub mod exec;
pub mod fs;
pub mod handoff;
pub mod heap;
pub mod issuer;
pub mod journald;
pub mod keystore;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod rfc3339;
pub mod schedule;
pub mod server;
pub mod status;
pub mod store;
pub mod token;
pub mod watch;
pub mod watched;
