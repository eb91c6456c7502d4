//! A real forward proxy (Debian `tinyproxy`) on a random loopback port,
//! logging every request it relays: `CONNECT host:port` for https, the
//! absolute URL for plain http.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_addr, live_binary, wait_for};

/// A running tinyproxy; stopped on drop.
pub struct Tinyproxy {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: PathBuf,
}

impl Tinyproxy {
    /// Start tinyproxy with its files under `dir`; `extra` lines go into
    /// its config (e.g. `ConnectPort 443` to refuse other tunnels). None
    /// when tinyproxy is not installed (skipped, or failed under scripts/test).
    pub fn start(dir: &Path, extra: &str) -> Option<Tinyproxy> {
        let bin = live_binary("tinyproxy", "Debian package tinyproxy")?;
        std::fs::create_dir_all(dir).unwrap();
        let addr = free_addr();
        let log = dir.join(format!("tinyproxy-{}.log", addr.port()));
        let conf = dir.join(format!("tinyproxy-{}.conf", addr.port()));
        // No ConnectPort line: CONNECT to any port is allowed.
        std::fs::write(
            &conf,
            format!(
                "Port {}\nListen 127.0.0.1\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 50\nTimeout 60\n{extra}\n",
                addr.port(),
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("tinyproxy.err")).unwrap())
            .spawn()
            .unwrap();
        let p = Tinyproxy {
            child: Some(child),
            url: format!("http://{addr}"),
            log,
        };
        wait_for(Duration::from_secs(10), "tinyproxy to listen", || {
            TcpStream::connect(addr).ok()
        });
        Some(p)
    }

    /// The requests it relayed, as logged: "CONNECT 127.0.0.1:4443
    /// HTTP/1.1", "POST http://127.0.0.1:8080/hook HTTP/1.1".
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("): ").filter(|_| l.contains("Request ")))
            .map(|(_, r)| r.to_string())
            .collect()
    }

    /// Whether any relayed request mentions `needle` (e.g. "127.0.0.1:4443").
    pub fn relayed(&self, needle: &str) -> bool {
        self.requests().iter().any(|r| r.contains(needle))
    }

    /// Stop it now (the port is then refused).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        self.stop();
    }
}
