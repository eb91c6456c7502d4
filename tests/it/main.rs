//! The integration tests, built as one binary (`cargo test --test it`):
//! each file below is one area and its tests are named `AREA::test_name`
//! (`cargo test --test it vault::` runs one area). Shared helpers live in
//! `support/`. A new area is a file `tests/it/AREA.rs` (its own helpers
//! in `tests/it/AREA/`) plus one `mod AREA;` line here.
//!
//! One binary links the crate once instead of once per file. The crash
//! suite (`tests/faults_crash.rs`) stays apart: it needs `--features
//! failpoints`, which changes the library.

mod support;

mod acme;
mod acme_daemon;
mod alert;
mod apikey;
mod apikey_config;
mod apikey_generic;
mod apps;
mod ari_engine;
mod audit;
mod backstop;
mod budget;
mod ca_rollover;
mod config_errors;
mod crash;
mod daemon;
mod demo;
mod deploy;
mod deployment;
mod endpoint;
mod faults_app;
mod faults_disk;
mod faults_issuer;
mod faults_vault;
mod governance;
mod hostile_host;
mod hostile_input;
mod hygiene;
mod journal_compat;
mod load;
mod logs;
mod metrics;
mod nginx;
mod proxy;
mod reload;
mod reload_groups;
mod retire;
mod sdnotify;
mod security;
mod swap;
mod systemd;
mod vault;
mod watch;
