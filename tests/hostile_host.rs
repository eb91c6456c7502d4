//! rekey on a host where someone else (another user, a careless admin, a
//! container in the same pod) controls files and processes rekey depends
//! on. One test binary; each kind of attack is a submodule in
//! `tests/hostile_host/`, and each scenario records a row in the scorecard
//! (suite `hostile_host`, RELIABILITY.md).

mod common;

#[path = "hostile_host/pid.rs"]
mod pid;
