//! Governance keys: team, labels, policy_waiver, audit_log, [policy], alert match.

use super::{parse, web, with_cert};

#[test]
fn governance_keys_parse() {
    let text = format!(
        "[daemon]\naudit_log = \"/var/lib/rekey/audit.log\"\naudit_max_size = \"2MiB\"\n\n{}\n[policy]\nmax_lifetime = \"398d\"\nmin_rsa_bits = 3072\nallowed_issuers = [\"dev\"]\nkey_files_private = true\nrequire_verify = true\napi_key_max_lifetime = \"30d\"\napi_keys_must_expire = true\n\n[[alert]]\ntype = \"log\"\nmatch = {{ team = \"payments\", labels = {{ env = \"prod\" }} }}\n",
        with_cert(&web("team = \"payments\"\nlabels = { env = \"prod\" }\npolicy_waiver = \"legacy\""))
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.daemon.audit_log.as_deref(),
        Some(std::path::Path::new("/var/lib/rekey/audit.log"))
    );
    assert_eq!(c.daemon.audit_max_size, 2 << 20);
    let cert = &c.certificates[0];
    assert_eq!(cert.team.as_deref(), Some("payments"));
    assert_eq!(cert.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(cert.policy_waiver.as_deref(), Some("legacy"));
    let p = c.policy.as_ref().unwrap();
    assert_eq!(p.min_rsa_bits, 3072);
    assert_eq!(
        p.max_lifetime,
        Some(std::time::Duration::from_secs(398 * 86400))
    );
    assert_eq!(
        p.api_key_max_lifetime,
        Some(std::time::Duration::from_secs(30 * 86400))
    );
    assert!(p.api_keys_must_expire);
    let m = c.alerts[0].matcher.as_ref().unwrap();
    assert_eq!(m.team.as_deref(), Some("payments"));
    // Waived, compliant otherwise (default lifetime, ecdsa, 0600).
    assert!(crate::config::evaluate_policy(&c).is_empty());
}

#[test]
fn bad_governance_keys_are_named() {
    let cases = [
        (with_cert(&web("team = \"\"")), "certificate[0].team"),
        (
            with_cert(&web("policy_waiver = \" \"")),
            "certificate[0].policy_waiver",
        ),
        (
            "[daemon]\naudit_max_size = \"10 parsecs\"\n".to_string(),
            "daemon.audit_max_size",
        ),
        (
            "[daemon]\naudit_max_size = 12\n".to_string(),
            "daemon.audit_max_size",
        ),
        (
            "[daemon]\naudit_log = \"\"\n".to_string(),
            "daemon.audit_log",
        ),
        (
            "[policy]\nmin_rsa_bits = 1024\n".to_string(),
            "policy.min_rsa_bits",
        ),
        (
            "[policy]\nmax_lifetime = \"forever\"\n".to_string(),
            "policy.max_lifetime",
        ),
        (
            "[policy]\napi_key_max_lifetime = \"long\"\n".to_string(),
            "policy.api_key_max_lifetime",
        ),
        (
            "[policy]\napi_keys_must_expire = \"yes\"\n".to_string(),
            "policy.api_keys_must_expire",
        ),
        (
            "[policy]\nrequire_verfy = true\n".to_string(),
            "policy.require_verfy",
        ),
        (
            "[[alert]]\ntype = \"log\"\nmatch = {}\n".to_string(),
            "alert[0].match",
        ),
        (
            "[[alert]]\ntype = \"log\"\nmatch = { owner = \"x\" }\n".to_string(),
            "alert[0].match.owner",
        ),
    ];
    for (text, key) in cases {
        let e = parse(&text).expect_err(key);
        assert_eq!(e.key(), key, "{e}");
    }
}
