//! `rekey demo` runs, with a short schedule, to its first verified handoff
//! and its deliberately broken one, which is rolled back and alerted.

use crate::support as common;

#[test]
fn demo_reaches_a_verified_and_a_rolled_back_handoff() {
    let out = std::process::Command::new(common::bin())
        .args(["demo", "--lifetime", "30s", "--exit-after-rollback"])
        .env("REKEY_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("app: generation 1") && stdout.contains("VERIFIED"),
        "{stdout}"
    );
    assert!(stdout.contains("app: rotation success"), "{stdout}");
    assert!(stdout.contains("broken: rotation rolled back"), "{stdout}");
    assert!(stdout.contains("handoff FAILED"), "{stdout}");
    // The alert reached the log sink.
    assert!(
        stderr.contains("handoff_failed") || stderr.contains("HandoffFailed"),
        "{stderr}"
    );
    assert!(stdout.contains("demo finished"));
}
