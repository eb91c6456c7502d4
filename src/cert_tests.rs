use super::*;

fn names() -> Names {
    Names {
        common_name: "app.test".into(),
        dns_names: vec!["app.test".into(), "localhost".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
    }
}

fn self_signed(key: &PrivateKey, names: &Names, lifetime: Duration) -> String {
    let mut p = names.params().unwrap();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::seconds(1);
    p.not_after = now + lifetime;
    p.self_signed(key.pair()).unwrap().pem()
}

#[test]
fn every_key_type_generates_and_builds_a_csr() {
    for kt in KeyType::ALL {
        let key = generate_key(kt).unwrap();
        let csr = build_csr(&key, &names()).unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&csr.into()).unwrap();
        assert_eq!(parsed.public_key.der_bytes(), key.public_key().as_slice());
        let again = load_key(key.pem(), "test").unwrap();
        assert_eq!(again.public_key(), key.public_key(), "{kt:?}");
    }
}

#[test]
fn validate_accepts_good_and_names_each_fault() {
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let other = generate_key(KeyType::EcdsaP256).unwrap();
    let now = SystemTime::now();
    let good = self_signed(&key, &names(), Duration::from_secs(3600));
    let issued = IssuedPem {
        cert_pem: &good,
        chain_pem: "",
        ca_pem: None,
    };
    let info = validate_issued(&issued, &key.public_key(), &names(), now).unwrap();
    assert!(info.fingerprint.starts_with("sha256:") && info.fingerprint.len() == 71);

    assert_eq!(
        validate_issued(&issued, &other.public_key(), &names(), now),
        Err(Invalid::KeyMismatch)
    );
    let mut more = names();
    more.dns_names.push("extra.test".into());
    assert_eq!(
        validate_issued(&issued, &key.public_key(), &more, now),
        Err(Invalid::MissingNames("extra.test".into()))
    );
    let later = now + Duration::from_secs(7200);
    assert!(matches!(
        validate_issued(&issued, &key.public_key(), &names(), later),
        Err(Invalid::Expired(_))
    ));
    let earlier = now - Duration::from_secs(60);
    assert!(matches!(
        validate_issued(&issued, &key.public_key(), &names(), earlier),
        Err(Invalid::NotYetValid(_))
    ));
    let garbage = IssuedPem {
        cert_pem: "hello",
        chain_pem: "",
        ca_pem: None,
    };
    assert!(matches!(
        validate_issued(&garbage, &key.public_key(), &names(), now),
        Err(Invalid::Unparsable(_))
    ));
    // A chain certificate that did not sign the leaf.
    let stranger = self_signed(&other, &names(), Duration::from_secs(3600));
    let broken = IssuedPem {
        cert_pem: &good,
        chain_pem: &stranger,
        ca_pem: None,
    };
    assert!(matches!(
        validate_issued(&broken, &key.public_key(), &names(), now),
        Err(Invalid::BrokenChain(_))
    ));
}

#[test]
fn key_type_of_a_certificate_is_recognised_for_every_type() {
    for kt in KeyType::ALL {
        let key = generate_key(kt).unwrap();
        let pem = self_signed(&key, &names(), Duration::from_secs(60));
        let der = pem_certs(pem.as_bytes(), "t").unwrap();
        let info = parse_der(&der[0]).unwrap();
        assert!(key_type_matches(&info, kt), "{kt:?}: {}", info.key_type);
        let other = if kt == KeyType::Ed25519 {
            KeyType::EcdsaP256
        } else {
            KeyType::Ed25519
        };
        assert!(!key_type_matches(&info, other));
    }
}

#[test]
fn wildcard_covers_one_label() {
    let info = CertInfo {
        subject: String::new(),
        issuer: String::new(),
        dns_names: vec!["*.example.com".into()],
        ip_addresses: vec![],
        not_before: SystemTime::UNIX_EPOCH,
        not_after: SystemTime::UNIX_EPOCH,
        serial: String::new(),
        fingerprint: String::new(),
        key_type: String::new(),
        public_key: vec![],
        is_ca: false,
    };
    let want = |n: &str| Names {
        common_name: n.into(),
        dns_names: vec![n.into()],
        ip_addresses: vec![],
    };
    assert!(missing_names(&info, &want("a.example.com")).is_empty());
    assert_eq!(missing_names(&info, &want("a.b.example.com")).len(), 1);
    assert_eq!(missing_names(&info, &want("example.com")).len(), 1);
}

#[test]
fn bundle_key_extraction() {
    let key = generate_key(KeyType::Ed25519).unwrap();
    let text = format!(
        "{}-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        key.pem().as_str()
    );
    let found = pem_private_key(text.as_bytes()).unwrap();
    assert_eq!(
        load_key(&found, "t").unwrap().public_key(),
        key.public_key()
    );
    assert!(pem_private_key(b"nothing").is_none());
}
