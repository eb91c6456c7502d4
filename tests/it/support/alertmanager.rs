//! A real Alertmanager (Debian prometheus-alertmanager) on a random loopback
//! port with a throwaway config, for tests that check alerts reach it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
/// A running Alertmanager, stopped on drop.
pub struct Alertmanager {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    pub fn start(bin: &Path) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let addr = super::free_addr();
        let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let am = Alertmanager {
            child,
            addr,
            _dir: dir,
        };
        super::wait_for(Duration::from_secs(30), "alertmanager ready", || {
            get(am.addr, "/-/ready").filter(|(code, _)| *code == 200)
        });
        am
    }

    /// The alerts it lists, as JSON.
    pub fn alerts(&self, query: &str) -> Vec<serde_json::Value> {
        let (code, body) = get(self.addr, &format!("/api/v2/alerts{query}")).unwrap_or_default();
        assert!(code == 200 || code == 0, "{code}: {body}");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap_or_default()
    }
}

/// An HTTP/1.0 GET (so the answer is never chunked); (status, body).
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_string()))
}
