//! systemd/rekey.service: `systemd-analyze verify` accepts it, and the
//! offline security analysis rates it no worse than the figure docs/operations.md states.

use crate::support as common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/rekey.service"))
        .unwrap()
}

/// A copy of the unit named rekey.service whose ExecStart is the binary
/// under test: verify insists that ExecStart exists, and
/// /usr/local/bin/rekey is not installed here.
fn unit_copy(dir: &Path) -> PathBuf {
    let text = unit_text();
    assert!(text.contains("ExecStart=/usr/local/bin/rekey run -c /etc/rekey/rekey.toml"));
    let p = dir.join("rekey.service");
    std::fs::write(&p, text.replace("/usr/local/bin/rekey", common::bin())).unwrap();
    p
}

#[test]
fn the_unit_has_the_operational_settings() {
    let text = unit_text();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=rekey",
        "StateDirectoryMode=0700",
        "User=rekey",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=CAP_KILL CAP_CHOWN CAP_FOWNER",
        "UMask=0077",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "rekey.service lacks {line:?}"
        );
    }
    assert!(text.lines().any(|l| l.starts_with("WatchdogSec=")));
    assert!(text.lines().any(|l| l.starts_with("ReadWritePaths=")));
}

#[test]
fn systemd_analyze_verify_passes() {
    let Some(analyze) = common::live_binary("systemd-analyze", "Debian package systemd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Other units on the machine may draw warnings; ours may not.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("rekey")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{err}"
    );
}

#[test]
fn security_exposure_is_at_most_what_readme_states() {
    let Some(analyze) = common::live_binary("systemd-analyze", "Debian package systemd") else {
        return;
    };
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    let marker = "rates the unit **";
    let stated: f64 = readme
        .find(marker)
        .map(|i| &readme[i + marker.len()..])
        .and_then(|rest| rest.split("**").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("docs/operations.md states no score as {marker:?}N.N**"));
    assert!(
        stated <= 2.5,
        "docs/operations.md states {stated}; the target is 2.5 or lower"
    );

    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let measured: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for rekey.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        measured <= stated,
        "exposure {measured} is above docs/operations.md's {stated}:\n{text}"
    );
}
