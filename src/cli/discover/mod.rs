//! `rekey discover PATH...`: find the certificates and keys under the given
//! paths, pair each key with the files holding its certificate, and propose
//! a starter config: a `[[certificate]]` for each pair rekey could manage
//! (names, key type, lifetime and file layout as found) and a `[[watch]]`
//! for every other certificate file, each with its expiry. It reads only
//! under the given paths (symlinks leading out are reported, not followed),
//! writes nothing, and never prints key material.

mod plan;
mod render;
mod scan;

use std::path::PathBuf;

pub use plan::{plan, round_lifetime, CertPlan, LoneKey, Plan, WatchPlan};
pub use render::{json, toml};
pub use scan::{scan, Found, Scan, MAX_DEPTH, MAX_FILES, MAX_SIZE};

/// Why discovery could not run.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// A given path does not exist or cannot be resolved.
    #[error("cannot read {}: {source}; give existing files or directories", path.display())]
    Path {
        /// As given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What was found and proposed.
#[derive(Debug)]
pub struct Discovery {
    /// The paths as given.
    pub paths: Vec<PathBuf>,
    /// The walk's findings.
    pub scan: Scan,
    /// The proposed entries.
    pub plan: Plan,
}

/// `rekey discover PATH... [--json]`: the starter config (or the findings
/// as JSON) on stdout; 2 when a path cannot be searched.
pub fn command(paths: &[PathBuf], json: bool) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match discover(paths) {
        Ok(d) if json => {
            println!("{}", serde_json::to_string_pretty(&self::json(&d))?);
            Ok(ExitCode::SUCCESS)
        }
        Ok(d) => {
            print!("{}", toml(&d, std::time::SystemTime::now()));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("rekey: discover: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Walk `paths` and propose a config.
pub fn discover(paths: &[PathBuf]) -> Result<Discovery, DiscoverError> {
    let scan = scan(paths)?;
    let plan = plan(&scan);
    Ok(Discovery {
        paths: paths.to_vec(),
        scan,
        plan,
    })
}
