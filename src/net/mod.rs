//! Outbound networking, every connection rekey opens to another program:
//!
//! - [`httpc`]: the one reqwest client setup (issuers, key services, ACME,
//!   alert sinks, HTTP reload and verify, the CLI), proxies, typed
//!   transport errors, the `Retry-After` parser;
//! - [`tls`]: TLS client configs (verified: platform roots plus
//!   `trust_bundle`; the probes' accept-any), client certificates, chain
//!   checks;
//! - [`admin`]: the CLI's requests to a running daemon, over TCP or the
//!   admin socket.
//!
//! The raw TLS probe that reads the certificate an app serves (and its
//! STARTTLS preambles) stays in `handoff/`: it is part of the handoff, not
//! a client of another service.

pub mod admin;
pub mod httpc;
pub mod tls;
