//! The Debian bookworm root file system the deployment tests run in: built
//! once with debootstrap (about a minute) and cached under
//! `target/deployment/`, behind a lock file so that tests running at the
//! same time build it once. Nothing writes into the cached copy after it is
//! built: the systemd test boots a copy, the pod test mounts it read-only.
//!
//! Its symlinks are absolute (`etc/nginx/sites-enabled/default ->
//! /etc/nginx/sites-available/default`): writing through one from the host
//! would write the host's file. Tests therefore write into a container's
//! files from inside it, or into directories they created themselves.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

/// What the tests need inside: systemd as PID 1, nginx, openssl and curl
/// to look at what nginx serves.
pub const PACKAGES: &str =
    "systemd,systemd-sysv,dbus,nginx-light,openssl,curl,ca-certificates,procps";
/// Bumped when the recipe changes, so an old cache is rebuilt.
const RECIPE: &str = "bookworm minbase v1";

/// `target/` of this build (the directory holding `debug/rekey`).
pub fn target_dir() -> PathBuf {
    let bin = Path::new(crate::support::bin());
    bin.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/PROFILE/")
        .to_path_buf()
}

/// Where the cache lives.
pub fn cache_dir() -> PathBuf {
    target_dir().join("deployment")
}

/// The Debian mirror apt uses here (the first `URIs:` of a deb822 source
/// for bookworm, or a `deb URL bookworm` line), else deb.debian.org.
fn mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
        files.sort();
        texts.extend(files.iter().filter_map(|f| std::fs::read_to_string(f).ok()));
    }
    texts.extend(std::fs::read_to_string("/etc/apt/sources.list").ok());
    for text in &texts {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
                if suites.split_whitespace().any(|s| s == "bookworm") {
                    if let Some(u) = uris.split_whitespace().next() {
                        return u.to_string();
                    }
                }
            }
            for l in stanza.lines() {
                let w: Vec<&str> = l.split_whitespace().collect();
                if w.len() >= 3 && w[0] == "deb" && w[2] == "bookworm" {
                    return w[1].to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// The cached rootfs, built first if missing. Err says what failed.
pub fn rootfs() -> Result<PathBuf, String> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let lock = File::create(cache.join("rootfs.lock")).map_err(|e| e.to_string())?;
    // Held until return: one builder, the others wait and then reuse.
    let _lock = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| e.to_string())?;
    let root = cache.join("rootfs-bookworm");
    let marker = root.join(".rekey-rootfs");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == RECIPE) {
        return Ok(root);
    }
    let tmp = cache.join("rootfs-bookworm.tmp");
    for d in [&tmp, &root] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
    }
    let mirror = mirror();
    eprintln!(
        "building the Debian rootfs with debootstrap from {mirror} (once; cached in {})",
        root.display()
    );
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={PACKAGES}"),
            "bookworm",
        ])
        .arg(&tmp)
        .arg(&mirror)
        .output()
        .map_err(|e| format!("debootstrap: {e}"))?;
    if !out.status.success() {
        let log =
            std::fs::read_to_string(tmp.join("debootstrap/debootstrap.log")).unwrap_or_default();
        return Err(format!(
            "debootstrap failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        ));
    }
    // nginx must not start by itself at boot: each test configures it
    // first. Removing the link is safe (it is not written through).
    let wants = tmp.join("etc/systemd/system/multi-user.target.wants/nginx.service");
    if wants.symlink_metadata().is_ok() {
        std::fs::remove_file(&wants).map_err(|e| e.to_string())?;
    }
    std::fs::write(tmp.join(".rekey-rootfs"), RECIPE).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &root).map_err(|e| e.to_string())?;
    Ok(root)
}

/// `dir` under `root`, created by us as a real directory (never through a
/// symlink of the rootfs): every component below `root` must be a real
/// directory or absent.
pub fn own_dir(root: &Path, rel: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in Path::new(rel).components() {
        p.push(part);
        match p.symlink_metadata() {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => panic!("{} is not a real directory", p.display()),
            Err(_) => std::fs::create_dir(&p).unwrap(),
        }
    }
    p
}
