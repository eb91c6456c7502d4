#![no_main]
//! `scripts/fuzz 600 config` (or `cargo fuzz run config`): see ../targets.rs.

// Each target uses one of the shared bodies.
#[allow(dead_code)]
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::config(data));
