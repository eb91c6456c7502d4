//! rekey: a credential-rotation sidecar. See DESIGN.md for the architecture.
pub mod cert;
pub mod client;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod issuer;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod schedule;
pub mod server;
pub mod status;
pub mod store;
pub mod token;
pub mod watch;
