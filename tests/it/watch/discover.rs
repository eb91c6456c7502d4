//! `rekey discover` on real directory layouts: certbot's live directory
//! (cert, chain, fullchain, privkey, plus a root), a Kubernetes secret
//! mount (`..data` links), a CA bundle, a DER certificate, a key with no
//! certificate, and links leading out of the given path. The starter config
//! passes `rekey check`; no key material is printed; nothing outside the
//! given path is read.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::common::bin;
use super::support::{self, put, DAY};

/// The base64 lines of a PEM key: none may ever be printed.
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn discover_pairs_keys_with_their_files_and_proposes_a_config_that_checks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tls");
    let outside = tempfile::tempdir().unwrap();

    // certbot's layout, plus the root beside it.
    let ca = support::ca("Example Root", DAY * 3650);
    let int = support::sub_ca(&ca, "Example Issuing CA", DAY * 1000);
    let leaf = support::leaf(
        &int,
        "app.internal",
        &["app.internal", "www.app.internal"],
        DAY * 90,
    );
    let live = root.join("live/app");
    put(&live.join("cert.pem"), leaf.pem.as_bytes());
    put(&live.join("chain.pem"), int.pem.as_bytes());
    put(
        &live.join("fullchain.pem"),
        format!("{}{}", leaf.pem, int.pem).as_bytes(),
    );
    put(&live.join("privkey.pem"), leaf.key_pem().as_bytes());
    put(&live.join("ca.pem"), ca.pem.as_bytes());
    chmod(&live.join("privkey.pem"), 0o640);

    // A Kubernetes secret volume: the visible names link into `..data`.
    let k8s = root.join("k8s");
    let gen = k8s.join("..2026_01_01_00_00_00.000000001");
    let svc = support::leaf(&int, "svc.default.svc", &["svc.default.svc"], DAY);
    put(&gen.join("tls.crt"), svc.pem.as_bytes());
    put(&gen.join("tls.key"), svc.key_pem().as_bytes());
    symlink(gen.file_name().unwrap(), k8s.join("..data")).unwrap();
    symlink("..data/tls.crt", k8s.join("tls.crt")).unwrap();
    symlink("..data/tls.key", k8s.join("tls.key")).unwrap();

    // Someone else's CA bundle, a DER certificate, a key with no certificate.
    let partner_a = support::ca("Partner Root A", DAY * 365);
    let partner_b = support::ca("Partner Root B", DAY * 20);
    put(
        &root.join("partner/bundle.pem"),
        format!("{}{}", partner_a.pem, partner_b.pem).as_bytes(),
    );
    let device = support::self_signed("device-7", -60, DAY * 10);
    put(&root.join("other/device.der"), &device.der);
    let orphan = support::self_signed("gone", -60, DAY);
    put(&root.join("other/orphan.key"), orphan.key_pem().as_bytes());
    put(&root.join("other/README"), b"not a certificate\n");

    // Links leading out of the given path: a file and a directory.
    let secret = support::self_signed("outside.test", -60, DAY);
    put(&outside.path().join("outside.pem"), secret.pem.as_bytes());
    put(
        &outside.path().join("outside.key"),
        secret.key_pem().as_bytes(),
    );
    symlink(outside.path().join("outside.pem"), root.join("escape.pem")).unwrap();
    symlink(outside.path(), root.join("escape-dir")).unwrap();

    let (code, text, err) = run(&["discover", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let cfg: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let certs = cfg["certificate"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{text}");
    let app = certs
        .iter()
        .find(|c| c["name"].as_str() == Some("app.internal"))
        .unwrap();
    let files = app["files"].as_table().unwrap();
    let p = |name: &str| live.join(name).display().to_string();
    for (kind, file) in [
        ("cert", "cert.pem"),
        ("chain", "chain.pem"),
        ("fullchain", "fullchain.pem"),
        ("key", "privkey.pem"),
        ("ca", "ca.pem"),
    ] {
        assert_eq!(
            files[kind].as_str(),
            Some(p(file).as_str()),
            "{kind}: {text}"
        );
    }
    assert_eq!(app["key_type"].as_str(), Some("ecdsa-p256"));
    assert_eq!(app["lifetime"].as_str(), Some("90d"));
    assert_eq!(app["swap"].as_str(), Some("rename"));
    assert_eq!(app["key_mode"].as_str(), Some("0640"));
    assert_eq!(app["common_name"].as_str(), Some("app.internal"));
    let names: Vec<&str> = app["dns_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(names, ["app.internal", "www.app.internal"]);
    let svc_entry = certs
        .iter()
        .find(|c| c["name"].as_str() == Some("svc.default.svc"))
        .unwrap();
    assert_eq!(svc_entry["swap"].as_str(), Some("symlink"), "{text}");
    assert_eq!(svc_entry["lifetime"].as_str(), Some("1d"));
    let files = svc_entry["files"].as_table().unwrap();
    assert_eq!(
        files["cert"].as_str(),
        Some(k8s.join("tls.crt").to_str().unwrap())
    );
    assert_eq!(
        files["key"].as_str(),
        Some(k8s.join("tls.key").to_str().unwrap())
    );

    let watches = cfg["watch"].as_array().unwrap();
    let watched: Vec<&str> = watches
        .iter()
        .map(|w| w["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        watched,
        [
            root.join("other/device.der").to_str().unwrap(),
            root.join("partner/bundle.pem").to_str().unwrap(),
        ],
        "{text}"
    );
    // Each finding's expiry is in the output; the bundle's is its sooner one.
    assert!(
        text.contains(&format!("expires {}", partner_b.not_after())),
        "{text}"
    );
    assert!(
        text.contains(&format!("expires {}", leaf.not_after())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}: no certificate for this key",
            root.join("other/orphan.key").display()
        )),
        "{text}"
    );

    // Nothing outside the given path was read or proposed.
    assert!(!text.contains("outside.test"), "{text}");
    assert!(!text.contains(&outside.path().join("outside.key").display().to_string()));
    for link in ["escape.pem", "escape-dir"] {
        assert!(
            text.contains(&format!(
                "{link}: a symlink leading outside the given paths"
            )),
            "{text}"
        );
    }

    // No key material, in either output.
    let (code, json_text, _) = run(&["discover", "--json", root.to_str().unwrap()]);
    assert_eq!(code, 0);
    for pem in [
        leaf.key_pem(),
        svc.key_pem(),
        orphan.key_pem(),
        secret.key_pem(),
    ] {
        for line in key_lines(&pem) {
            assert!(
                !text.contains(&line) && !json_text.contains(&line),
                "key material printed"
            );
        }
    }

    // The JSON findings: one per file, with what was proposed for it.
    let v: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    let findings = v["findings"].as_array().unwrap();
    let finding = |path: &Path| {
        findings
            .iter()
            .find(|f| f["path"] == path.display().to_string())
            .unwrap_or_else(|| panic!("no finding for {}: {v}", path.display()))
    };
    assert_eq!(finding(&live.join("privkey.pem"))["key"], "ecdsa-p256");
    assert_eq!(finding(&live.join("privkey.pem"))["mode"], "0640");
    assert_eq!(
        finding(&live.join("privkey.pem"))["proposed"],
        "certificate app.internal"
    );
    let bundle = finding(&root.join("partner/bundle.pem"));
    assert_eq!(bundle["certificates"].as_array().unwrap().len(), 2);
    assert_eq!(
        bundle["certificates"][1]["not_after"],
        partner_b.not_after()
    );
    assert_eq!(bundle["proposed"], "watch bundle");
    assert_eq!(
        finding(&root.join("other/orphan.key"))["proposed"],
        serde_json::Value::Null
    );
    assert_eq!(findings.len(), 10, "{v}");
    assert!(findings.iter().all(|f| f["path"]
        .as_str()
        .unwrap()
        .starts_with(root.to_str().unwrap())));
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        [
            root.join("escape-dir").to_str().unwrap(),
            root.join("escape.pem").to_str().unwrap()
        ]
    );

    // The starter config is a valid config as it is.
    let state = dir.path().join("state");
    let config = dir.path().join("rekey.toml");
    std::fs::write(
        &config,
        format!("[daemon]\nstate_dir = \"{}\"\n\n{text}", state.display()),
    )
    .unwrap();
    let (code, out, err) = run(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("2 certificate(s)") && out.contains("2 watch(es)"),
        "{out}"
    );

    // A path that does not exist is a usage error.
    let (code, _, err) = run(&["discover", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("nope") && err.contains("give existing files"),
        "{err}"
    );
}
