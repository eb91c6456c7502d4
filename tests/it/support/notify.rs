//! A NOTIFY_SOCKET the test listens on, as systemd does for `Type=notify`:
//! the datagrams rekey sends (READY=1, STATUS=…, WATCHDOG=1, RELOADING=1,
//! STOPPING=1), each with the moment it arrived.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The socket and every message received on it so far.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: UnixDatagram,
    /// Messages in arrival order, with when each came.
    pub seen: Vec<(Instant, String)>,
}

impl NotifySocket {
    /// Listen at `path` (give it to the daemon as NOTIFY_SOCKET).
    pub fn bind(path: &Path) -> NotifySocket {
        NotifySocket {
            path: path.to_path_buf(),
            sock: UnixDatagram::bind(path).unwrap(),
            seen: Vec::new(),
        }
    }

    /// The path as an environment value.
    pub fn env(&self) -> (&'static str, &str) {
        ("NOTIFY_SOCKET", self.path.to_str().unwrap())
    }

    /// Receive one message if it comes within `wait`.
    fn receive(&mut self, wait: Duration) {
        self.sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = self.sock.recv(&mut buf) {
            self.seen.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }

    /// Receive until `done(all messages so far)`; panics naming `what`
    /// (and what did come) after `timeout`.
    pub fn receive_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&[(Instant, String)]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; got {:#?}",
                self.seen
            );
            self.receive(left);
        }
    }

    /// Receive until `message` has come (exactly that datagram).
    pub fn expect(&mut self, message: &str, timeout: Duration) {
        self.receive_until(timeout, message, |s| s.iter().any(|(_, m)| m == message));
    }

    /// Receive whatever comes during `span` (proving an absence takes a wait).
    pub fn listen_for(&mut self, span: Duration) {
        let until = Instant::now() + span;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            self.receive(left);
        }
    }

    /// The messages that arrived since the last receive, without waiting.
    pub fn drain(&mut self) -> Vec<String> {
        let from = self.seen.len();
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            self.seen.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
        self.sock.set_nonblocking(false).unwrap();
        self.seen[from..].iter().map(|(_, m)| m.clone()).collect()
    }
}
