//! A hostile or careless host: what another user on the same machine (or a
//! container in the same pod) can do to a running rekey, and what a careless
//! operator's config does to it. Every scenario goes to the scorecard under
//! the suite `hostile_host`.

mod common;

#[path = "hostile_host/endpoint.rs"]
mod endpoint;
#[path = "hostile_host/exec.rs"]
mod exec;
#[path = "hostile_host/fs.rs"]
mod fs;
#[path = "hostile_host/pid.rs"]
mod pid;
