//! rekey: a credential-rotation sidecar. See DESIGN.md for the architecture.
pub mod config;
pub mod store;
