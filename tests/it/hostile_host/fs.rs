//! Files, paths, planted credentials and ownership: what someone else on
//! the host (or a careless operator) can put where rekey reads or writes.
//!
//! - a FIFO, a symlink to /dev/zero or an oversized file at every path the
//!   config names: refused at once, naming the key and the path; never a
//!   hang, never unbounded memory, shutdown on time;
//! - a target directory moved away and replaced by a symlink: nothing is
//!   written through it, `tampered` is raised;
//! - a certificate planted before the first start: not adopted unless it
//!   chains to the issuer and passes `[policy]`; `rekey check` says so;
//! - a state dir another user owns, an admin token others can write.

use std::ffi::OsString;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

use crate::support::alert as support;

/// Paths rekey reads: special files, a FIFO swapped in while running.
#[path = "fs_reads.rs"]
mod reads;
/// Paths rekey writes, and what it trusts: swapped directories, planted
/// credentials, ownership.
#[path = "fs_trust.rs"]
mod trust;

const SUITE: &str = "hostile_host";
/// Far longer than any refusal takes: a hang shows up as this timeout.
const DEADLINE: Duration = Duration::from_secs(15);

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// What is put at a configured path.
#[derive(Clone, Copy, Debug)]
enum Special {
    /// A FIFO nobody writes: a blocking open would hang forever.
    Fifo,
    /// A symlink to /dev/zero: a plain read would never end.
    DevZero,
    /// A regular file larger than anything that path may hold.
    TooBig(usize),
}

impl Special {
    fn make(self, p: &Path) {
        let _ = std::fs::remove_file(p);
        match self {
            Special::Fifo => {
                nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }
            Special::DevZero => symlink("/dev/zero", p).unwrap(),
            Special::TooBig(n) => {
                std::fs::write(p, vec![b'A'; n]).unwrap();
                set_mode(p, 0o600);
            }
        }
    }

    /// Words the refusal must contain.
    fn says(self) -> &'static str {
        match self {
            Special::Fifo => "FIFO",
            Special::DevZero => "character device",
            Special::TooBig(_) => "bytes is",
        }
    }
}

/// Run `rekey ARGS` to its end, or kill it at [`DEADLINE`]: its exit code
/// and output, or Err when it was still running.
fn run_to_end(dir: &Path, args: &[OsString]) -> Result<(i32, String), String> {
    let out_path = dir.join(format!("out-{}.log", fastrand::u64(..)));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(bin())
        .args(args)
        .env("REKEY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            return Ok((st.code().unwrap_or(-1), text));
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            return Err(format!("still running after {DEADLINE:?}: {text}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Add lines to the `[daemon]` table of the config `env` wrote.
fn daemon_lines(env: &Env, lines: &str) {
    let p = env.path("rekey.toml");
    let text = std::fs::read_to_string(&p).unwrap().replacen(
        "[daemon]\n",
        &format!("[daemon]\n{lines}\n"),
        1,
    );
    std::fs::write(&p, text).unwrap();
}

/// A self-signed certificate and key for `localhost` valid `days` from
/// now: PEMs (cert, key) and the certificate's fingerprint.
fn self_signed(days: i64) -> (String, String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(1);
    p.not_after = now + time::Duration::days(days);
    let cert = p.self_signed(&key).unwrap();
    let fp = rekey::cert::fingerprint(cert.der());
    (cert.pem(), key.serialize_pem(), fp)
}

/// (cert, key) paths of `web` under `env` (the layout of `cert_section`).
fn inv_cred(env: &Env) -> (PathBuf, PathBuf) {
    let d = env.path("tls/web");
    (d.join("cert.pem"), d.join("key.pem"))
}
