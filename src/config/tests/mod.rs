use super::error::did_you_mean;
use super::*;

mod alert;
mod bad;
mod budget;
mod files;
mod governance;
mod handoff;
mod reload_group;
mod vault;
mod watch;

pub(super) const FILE: &str = "/etc/rekey/rekey.toml";

/// A valid issuer plus one certificate whose body is `cert` (inserted verbatim).
pub(super) fn with_cert(cert: &str) -> String {
    format!(
        "[issuer.dev]\ntype = \"local-ca\"\n\n[issuer.other]\ntype = \"local-ca\"\n\n[[certificate]]\n{cert}\n"
    )
}

/// A certificate body that is valid on its own; `extra` lines are appended.
pub(super) fn web(extra: &str) -> String {
    format!(
        "name = \"web\"\nissuer = \"dev\"\ndns_names = [\"app.internal\"]\nfiles = {{ cert = \"/tls/cert.pem\", key = \"/tls/key.pem\" }}\n{extra}"
    )
}

/// 1-based line of the first occurrence of `marker` in `text`.
pub(super) fn line_of(text: &str, marker: &str) -> usize {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("marker {marker:?} not in:\n{text}"));
    text[..at].matches('\n').count() + 1
}

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(FILE))
}

#[test]
fn full_config_parses_to_expected_values() {
    let text = r#"
[daemon]
state_dir = "/srv/rekey"
listen = "[::1]:9000"
log_format = "json"
max_concurrent_rotations = 2
backstop = "10m"

[issuer.dev]
type = "local-ca"
key_type = "ecdsa-p384"
common_name = "Test CA"
ca_lifetime = "365d"
ca_renew_before = "30d"

[[certificate]]
name = "web.1_a-b"
issuer = "dev"
common_name = "App"
dns_names = ["app.internal", "*.app.internal"]
ip_addresses = ["127.0.0.1", "::1"]
key_type = "rsa-3072"
lifetime = "8h"
renew_before = "2h"
jitter = "12.5%"
swap = "symlink"
files = { cert = "/tls/c.pem", key = "/tls/k.pem", chain = "/tls/ch.pem", fullchain = "/tls/f.pem", bundle = "/tls/b.pem", ca = "/tls/ca.pem" }
key_mode = "0640"
cert_mode = 0o444
owner = "root"
group = "0"
reload = { type = "none" }
verify = { type = "none" }
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.path, Path::new(FILE));
    assert_eq!(c.daemon.state_dir, Path::new("/srv/rekey"));
    assert_eq!(c.daemon.listen, Some("[::1]:9000".parse().unwrap()));
    assert_eq!(c.daemon.log_format, LogFormat::Json);
    assert_eq!(c.daemon.max_concurrent_rotations, 2);
    assert_eq!(c.daemon.backstop, Duration::from_secs(600));
    let Some(IssuerConfig::LocalCa(ca)) = c.issuer("dev") else {
        panic!("no dev issuer")
    };
    assert_eq!(ca.key_type, KeyType::EcdsaP384);
    assert_eq!(ca.common_name, "Test CA");
    assert_eq!(ca.ca_lifetime, Duration::from_secs(365 * 86400));
    assert_eq!(
        ca.ca_renew_before,
        Share::Duration(Duration::from_secs(30 * 86400))
    );
    assert!(c.issuer("nope").is_none());

    let w = &c.certificates[0];
    assert_eq!(w.name, "web.1_a-b");
    assert_eq!(w.issuer, "dev");
    assert_eq!(w.common_name, "App");
    assert_eq!(w.dns_names, ["app.internal", "*.app.internal"]);
    let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    assert_eq!(w.ip_addresses, ips);
    assert_eq!(w.key_type, KeyType::Rsa3072);
    assert_eq!(w.lifetime, Duration::from_secs(8 * 3600));
    assert_eq!(w.renew_before, Share::Duration(Duration::from_secs(7200)));
    assert_eq!(w.jitter, Share::Fraction(0.125));
    assert_eq!(w.swap, SwapMode::Symlink);
    let kinds: Vec<&str> = w.files.entries().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["ca", "chain", "cert", "fullchain", "key", "bundle"]);
    assert_eq!(w.files.fullchain.as_deref(), Some(Path::new("/tls/f.pem")));
    assert_eq!(w.files.bundle.as_deref(), Some(Path::new("/tls/b.pem")));
    assert_eq!((w.key_mode, w.cert_mode), (0o640, 0o444));
    assert_eq!(w.owner.as_deref(), Some("root"));
    assert_eq!(w.group.as_deref(), Some("0"));
    assert_eq!((w.uid, w.gid), (Some(0), Some(0)));
    assert_eq!(w.reload, ReloadConfig::None);
    assert_eq!(w.verify, VerifyConfig::default());
}

#[test]
fn admin_token_file_resolves_and_no_listen_address_needs_it() {
    let c = parse("[daemon]\nlisten = \"0.0.0.0:9464\"\nadmin_token_file = \"token\"\n").unwrap();
    assert_eq!(
        c.daemon.admin_token_file.as_deref(),
        Some(Path::new("/etc/rekey/token"))
    );
    // Without a token TCP serves no mutating route, so any address is fine.
    for listen in [
        "127.0.0.1:1",
        "[::1]:1",
        "127.0.0.2:1",
        "0.0.0.0:9464",
        "[::]:9464",
    ] {
        let c = parse(&format!("[daemon]\nlisten = \"{listen}\"\n")).unwrap();
        assert_eq!(c.daemon.admin_token_file, None);
    }
    let c = parse("[daemon]\nadmin_token_file = \"/run/secrets/t\"\n").unwrap();
    assert_eq!(
        c.daemon.admin_token_file.as_deref(),
        Some(Path::new("/run/secrets/t"))
    );
}

#[test]
fn defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.daemon.state_dir, Path::new("/var/lib/rekey"));
    assert_eq!(c.daemon.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(c.daemon.log_format, LogFormat::Text);
    assert_eq!(c.daemon.max_concurrent_rotations, 4);
    assert_eq!(c.daemon.backstop, Duration::from_secs(300));
    assert!(c.issuers.is_empty() && c.certificates.is_empty());
    assert_eq!(c.daemon.admin_token_file, None);

    let text = format!(
        "[daemon]\nlisten = \"\"\n\n{}",
        with_cert("name = \"w\"\nissuer = \"dev\"\nip_addresses = [\"10.0.0.1\"]\nfiles = { bundle = \"/b.pem\" }")
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.daemon.listen, None);
    let Some(IssuerConfig::LocalCa(ca)) = c.issuer("dev") else {
        panic!("no dev issuer")
    };
    assert_eq!(ca.key_type, KeyType::EcdsaP256);
    assert_eq!(ca.common_name, "rekey local CA");
    assert_eq!(ca.ca_lifetime, Duration::from_secs(3650 * 86400));
    let w = &c.certificates[0];
    assert_eq!(w.common_name, "10.0.0.1", "CN falls back to the first IP");
    assert_eq!(w.key_type, KeyType::EcdsaP256);
    assert_eq!(w.lifetime, Duration::from_secs(86400));
    assert_eq!(w.renew_before, Share::Fraction(0.33));
    assert_eq!(w.jitter, Share::Fraction(0.05));
    assert_eq!(w.swap, SwapMode::Rename);
    assert_eq!((w.key_mode, w.cert_mode), (0o600, 0o644));
    assert_eq!(w.on_remove, crate::config::OnRemove::Keep);
    assert_eq!((w.owner.as_ref(), w.uid, w.gid), (None, None, None));
    assert_eq!(w.reload, ReloadConfig::None);
    assert_eq!(w.verify, VerifyConfig::default());

    let c = parse(&with_cert(&web(""))).unwrap();
    assert_eq!(
        c.certificates[0].common_name, "app.internal",
        "CN falls back to the first DNS name"
    );
}

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let text = format!(
        "[daemon]\nstate_dir = \"state\"\n\n{}",
        with_cert("name = \"w\"\nissuer = \"dev\"\ndns_names = [\"a\"]\nfiles = { cert = \"tls/./c.pem\", key = \"/abs/k.pem\", ca = \"../ca.pem\" }")
    );
    let c = Config::parse(&text, Path::new("/etc/rekey/rekey.toml")).unwrap();
    assert_eq!(c.daemon.state_dir, Path::new("/etc/rekey/state"));
    let f = &c.certificates[0].files;
    assert_eq!(f.cert.as_deref(), Some(Path::new("/etc/rekey/tls/c.pem")));
    assert_eq!(f.key.as_deref(), Some(Path::new("/abs/k.pem")));
    assert_eq!(f.ca.as_deref(), Some(Path::new("/etc/rekey/../ca.pem")));

    // A bare file name has no directory: paths stay relative to the working dir.
    let c = Config::parse(&text, Path::new("rekey.toml")).unwrap();
    assert_eq!(c.daemon.state_dir, Path::new("state"));
}

#[test]
fn share_of_and_display() {
    let day = Duration::from_secs(86400);
    assert_eq!(Share::Fraction(0.25).of(day), Duration::from_secs(21600));
    assert_eq!(Share::Fraction(0.0).of(day), Duration::ZERO);
    assert_eq!(Share::Fraction(f64::NAN).of(day), Duration::ZERO);
    assert_eq!(Share::Fraction(2.0).of(day), day);
    assert_eq!(
        Share::Duration(Duration::from_secs(3600)).of(day),
        Duration::from_secs(3600)
    );
    assert_eq!(Share::Duration(2 * day).of(day), day, "capped at lifetime");
    assert_eq!(Share::Fraction(0.33).to_string(), "33%");
    assert_eq!(Share::Fraction(0.07).to_string(), "7%");
    assert_eq!(Share::Fraction(0.125).to_string(), "12.5%");
    assert_eq!(
        Share::Duration(Duration::from_secs(8 * 3600)).to_string(),
        "8h"
    );
}

#[test]
fn key_types_and_file_kinds_spell_as_in_the_config() {
    for k in KeyType::ALL {
        assert_eq!(KeyType::from_name(k.as_str()), Some(k));
    }
    let names: Vec<&str> = [
        FileKind::Cert,
        FileKind::Key,
        FileKind::Chain,
        FileKind::Fullchain,
        FileKind::Bundle,
        FileKind::Ca,
    ]
    .iter()
    .map(FileKind::as_str)
    .collect();
    assert_eq!(names, ["cert", "key", "chain", "fullchain", "bundle", "ca"]);
}

#[test]
fn did_you_mean_suggestions() {
    let keys = ["renew_before", "key_type", "state_dir"];
    assert_eq!(did_you_mean("renew_befor", keys), Some("renew_before"));
    assert_eq!(did_you_mean("Key-Type", keys), Some("key_type"));
    assert_eq!(did_you_mean("colour", keys), None);
}

#[test]
fn example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rekey.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::parse(&text, &path).unwrap();
    assert_eq!(c.daemon.state_dir, Path::new("/tmp/rekey-example/state"));
    assert_eq!(c.daemon.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert!(matches!(c.issuer("dev"), Some(IssuerConfig::LocalCa(_))));
    let names: Vec<&str> = c.certificates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["web", "api"]);
    let web = &c.certificates[0];
    assert_eq!(web.lifetime, Duration::from_secs(120));
    assert_eq!(web.renew_before, Share::Fraction(0.5));
    assert_eq!(web.dns_names, ["localhost"]);
    assert_eq!(web.ip_addresses, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
    let api = &c.certificates[1];
    assert_eq!(api.swap, SwapMode::Symlink);
    assert_eq!(api.key_type, KeyType::Ed25519);
    for cert in &c.certificates {
        for (_, p) in cert.files.entries() {
            assert!(p.starts_with("/tmp/rekey-example/tls/"), "{}", p.display());
        }
    }
}

proptest::proptest! {
    #[test]
    fn percentages_round_trip(tenths in 1u32..999) {
        let text = format!("{}%", f64::from(tenths) / 10.0);
        let share = values::share(&text).unwrap();
        proptest::prop_assert_eq!(share.to_string(), text);
    }
}

#[test]
fn the_other_examples_parse_and_say_how_their_servers_are_reached() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for name in [
        "acme-pebble.example.toml",
        "vault.example.toml",
        "apikey.example.toml",
    ] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (issuer, cfg) in &c.issuers {
            let proxy = match cfg {
                IssuerConfig::Acme(a) => &a.proxy,
                IssuerConfig::Vault(v) => &v.proxy,
                IssuerConfig::HttpKeys(k) => &k.proxy,
                _ => continue,
            };
            // The local Pebble is reached directly; the others follow the
            // environment.
            let want = if name.starts_with("acme-pebble") && issuer == "pebble" {
                crate::config::ProxyConfig::Off
            } else {
                crate::config::ProxyConfig::Environment
            };
            assert_eq!(proxy, &want, "{name}: issuer {issuer}");
        }
    }
}
