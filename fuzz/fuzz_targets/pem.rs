#![no_main]
//! `scripts/fuzz 600 pem` (or `cargo fuzz run pem`): see ../targets.rs.

// Each target uses one of the shared bodies.
#[allow(dead_code)]
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::pem(data));
