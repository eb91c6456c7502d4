//! A booted copy of the cached Debian rootfs with systemd as its PID 1
//! (systemd-nspawn, private network), for the deployment tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::wait_until;

/// A booted copy of the rootfs; powered off and removed on drop.
pub(super) struct Container {
    nspawn: Child,
    pid1: u32,
    pub(super) root: PathBuf,
    log: PathBuf,
}

/// The process whose parent is `parent` and whose name is `comm`.
fn child_named(parent: u32, comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && name == comm).then_some(pid)
    })
}

impl Container {
    /// Copy the cached rootfs and boot it: `--private-network` gives the
    /// container its own loopback, so nginx on 443 and rekey on 9464 cannot
    /// meet anything of the host's.
    pub(super) fn boot(rootfs: &Path, work: &Path) -> Result<Container, String> {
        let root = work.join("root");
        let cp = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(rootfs)
            .arg(&root)
            .status()
            .map_err(|e| e.to_string())?;
        if !cp.success() {
            return Err("cannot copy the rootfs".into());
        }
        let log = work.join("nspawn.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("-D")
            .arg(&root)
            .args([
                "--register=no",
                "--keep-unit",
                "--console=read-only",
                "--private-network",
                "-b",
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out);
        // Its own session: nspawn must not take the test's terminal signals.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        let mut nspawn = cmd.spawn().map_err(|e| format!("systemd-nspawn: {e}"))?;
        // None once nspawn has exited: no point waiting out the deadline.
        let pid1 = wait_until(
            Instant::now() + Duration::from_secs(60),
            || match child_named(nspawn.id(), "systemd") {
                Some(p) => Some(Some(p)),
                None => nspawn.try_wait().ok().flatten().map(|_| None),
            },
        )
        .flatten();
        let Some(pid1) = pid1 else {
            let _ = nspawn.kill();
            return Err(format!(
                "the container did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        };
        let c = Container {
            nspawn,
            pid1,
            root,
            log,
        };
        // Before systemd has set up its bus, is-system-running says
        // "offline" at once instead of waiting.
        let mut state = String::new();
        let up = wait_until(Instant::now() + Duration::from_secs(120), || {
            let o = c.sh("timeout 120 systemctl is-system-running --wait");
            state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            matches!(state.as_str(), "running" | "degraded").then_some(())
        });
        if up.is_none() {
            return Err(format!("systemd is {state:?}: {}", c.boot_log()));
        }
        Ok(c)
    }

    /// Run `script` with sh inside the container (all its namespaces).
    pub(super) fn sh(&self, script: &str) -> Output {
        self.sh_in(script, None)
    }

    pub(super) fn sh_in(&self, script: &str, input: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut child = Command::new("nsenter")
            .args(["-t", &self.pid1.to_string(), "-a", "--", "sh", "-c", script])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(bytes) = input {
            child.stdin.take().unwrap().write_all(bytes).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// stdout of a command that must succeed, else Err with both streams.
    pub(super) fn run(&self, script: &str) -> Result<String, String> {
        let o = self.sh(script);
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!(
                "`{script}` exited {:?}: {}{}",
                o.status.code(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    }

    /// Write `text` to `path` inside the container (from inside, so no
    /// symlink of the rootfs can lead to a host file).
    pub(super) fn write(&self, path: &str, text: &str) -> Result<(), String> {
        let o = self.sh_in(&format!("cat > '{path}'"), Some(text.as_bytes()));
        o.status.success().then_some(()).ok_or_else(|| {
            format!(
                "cannot write {path}: {}",
                String::from_utf8_lossy(&o.stderr)
            )
        })
    }

    /// One property of a unit (`systemctl show -p NAME --value`).
    pub(super) fn prop(&self, unit: &str, name: &str) -> String {
        self.run(&format!("systemctl show -p {name} --value {unit}"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The unit's journal since `cursor` (or all of it).
    pub(super) fn journal(&self, unit: &str) -> String {
        self.run(&format!("journalctl -u {unit} -o cat --no-pager"))
            .unwrap_or_default()
    }

    pub(super) fn boot_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM makes nspawn power the container off (systemd gets
        // SIGRTMIN+3); SIGKILL only if that hangs.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.nspawn.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        wait_until(Instant::now() + Duration::from_secs(30), || {
            self.nspawn.try_wait().ok().flatten()
        });
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
