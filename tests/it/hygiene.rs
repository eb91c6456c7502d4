//! Project-wide rules that must not regress: one crypto provider, shipped
//! example configs that are valid as they are.

use crate::support as common;

#[test]
fn aws_lc_rs_is_the_only_crypto_provider() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal,build,dev",
            "-i",
            "ring",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let tree = String::from_utf8_lossy(&out.stdout);
    // cargo says either "nothing to print" or "did not match any packages".
    assert!(
        !tree.contains("ring v")
            && (err.contains("nothing to print") || err.contains("did not match")),
        "ring is in the dependency tree:\n{tree}{err}"
    );
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "-i", "aws-lc-rs"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws-lc-rs missing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_shipped_config_passes_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    let entries = ["config", "systemd"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap());
    for entry in entries {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let out = std::process::Command::new(common::bin())
                .arg("check")
                .arg("-c")
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 4,
        "only {seen} configs found in config/ and systemd/"
    );
}
