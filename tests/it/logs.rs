//! Logs: with `log_format = "json"` every line is one JSON object, rotation
//! lines carry the stable fields, and no private key appears even at trace
//! level.

use crate::support as common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// The base64 lines of every PEM private key in `text`.
fn key_bodies(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
            inside = true;
        } else if line.starts_with("-----END") {
            inside = false;
        } else if inside && !line.trim().is_empty() {
            out.push(line.trim().to_string());
        }
    }
    out
}

/// Private key PEM bodies of every file under `dir`.
fn keys_under(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            keys_under(&p, out);
        } else if let Ok(text) = std::fs::read_to_string(&p) {
            out.extend(key_bodies(&text));
        }
    }
}

#[test]
fn json_lines_with_stable_fields_and_no_secret_at_trace_level() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let text = std::fs::read_to_string(env.path("rekey.toml"))
        .unwrap()
        .replace("[daemon]\n", "[daemon]\nlog_format = \"json\"\n");
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    let d = env.spawn(env.run_command().env("REKEY_LOG", "trace"));
    wait_valid(d.addr, "web", Duration::from_secs(20));
    let mut secrets = Vec::new();
    for _ in 0..2 {
        secrets.extend(key_bodies(
            &std::fs::read_to_string(env.path("tls/web/key.pem")).unwrap(),
        ));
        let (code, body) = d.post("/v1/rotate/web").unwrap();
        assert_eq!(code, 200, "{body}");
    }
    keys_under(&env.path("state"), &mut secrets);
    keys_under(&env.path("tls"), &mut secrets);
    assert_eq!(d.terminate(), Some(0));

    let log = env.log();
    let mut rotated = 0;
    for (i, line) in log.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", i + 1));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["event"] == "rotated" {
            rotated += 1;
            assert_eq!(v["credential"], "web", "{line}");
            assert_eq!(v["issuer"], "dev", "{line}");
            assert!(v["generation"].is_u64(), "{line}");
            assert!(v["duration_ms"].is_u64(), "{line}");
        }
    }
    assert_eq!(rotated, 3, "issuance plus two rotations:\n{log}");
    assert!(log.contains("TRACE"), "the log is not at trace level");

    // Keys of the app, the journaled generations and the local CA.
    assert!(
        secrets.len() >= 6,
        "found too few keys to check: {secrets:?}"
    );
    let flat: String = log.split_whitespace().collect();
    for body in &secrets {
        // Short final lines could match by chance; full lines cannot.
        if body.len() >= 40 {
            assert!(
                !flat.contains(body.as_str()),
                "a private key line is in the log: {body}"
            );
        }
    }
}
