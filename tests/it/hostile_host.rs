//! A hostile or careless host: what another user on the same machine (or a
//! container in the same pod) can do to a running rekey, and what a careless
//! operator's config does to it. Every scenario goes to the scorecard under
//! the suite `hostile_host`.

mod endpoint;
mod exec;
mod fs;
mod pid;
