//! rekey: a credential-rotation sidecar. See DESIGN.md for the architecture.

// First, so `failpoint!` is in scope in every module below.
#[macro_use]
pub mod failpoint;

pub mod alert;
pub mod audit;
pub mod budget;
pub mod cert;
pub mod certview;
pub mod client;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod discover;
pub mod engine;
pub mod evidence;
pub mod exec;
pub mod handoff;
pub mod heap;
pub mod httpc;
pub mod issuer;
pub mod journald;
pub mod keystore;
pub mod logfmt;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod report;
pub mod safefile;
pub mod schedule;
pub mod server;
pub mod status;
pub mod store;
pub mod timestamp;
pub mod tlsutil;
pub mod token;
pub mod watch;
