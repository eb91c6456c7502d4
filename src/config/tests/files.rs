//! `files`: the DER and PKCS#12 outputs, their modes, and the keystore
//! password file read at load.

use std::path::PathBuf;

use super::{parse, with_cert};
use crate::config::{FileKind, Pkcs12Options};

#[test]
fn binary_outputs_parse_with_their_keystore_settings() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "changeit\n").unwrap();
    let files = |extra: &str| {
        format!(
            "name = \"web\"\nissuer = \"dev\"\ndns_names = [\"a\"]\nfiles = {{ cert_der = \"/tls/c.der\", key_der = \"/tls/k.der\", pkcs12 = \"/tls/k.p12\", pkcs12_password = {{ file = \"{}\" }}{extra} }}",
            pw.display()
        )
    };
    let c = parse(&with_cert(&files(""))).unwrap();
    let f = &c.certificates[0].files;
    assert_eq!(
        f.pkcs12_options.as_deref(),
        Some(&Pkcs12Options {
            password_file: pw.clone(),
            legacy: false,
            alias: "web".into(),
        })
    );
    let kinds: Vec<FileKind> = f.entries().iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [FileKind::CertDer, FileKind::KeyDer, FileKind::Pkcs12]
    );
    assert_eq!(f.pkcs12, Some(PathBuf::from("/tls/k.p12")));
    // The keystore and the DER key hold the key: key_mode, like key.pem.
    assert!(FileKind::Pkcs12.holds_key() && FileKind::KeyDer.holds_key());
    assert!(!FileKind::CertDer.holds_key());

    let c = parse(&with_cert(&files(
        ", pkcs12_legacy = true, pkcs12_alias = \"tomcat\"",
    )))
    .unwrap();
    let o = c.certificates[0].files.pkcs12_options.clone().unwrap();
    assert!(o.legacy);
    assert_eq!(o.alias, "tomcat");

    // An empty password file stops the load, naming the key.
    std::fs::write(&pw, "\n").unwrap();
    let e = parse(&with_cert(&files(""))).unwrap_err();
    assert_eq!(e.key(), "certificate[0].files.pkcs12_password.file", "{e}");
    assert!(e.to_string().contains("is empty"), "{e}");
}
