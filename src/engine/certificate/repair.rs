//! Drift detection and repair for a credential's published files, and
//! loading the committed generation's material on demand.
//!
//! An idle credential keeps only the digests of what its files must hold
//! ([`Expected`]) and the parsed certificate; the PEM (and the private key)
//! is read back from the state dir only to republish it or hand the
//! certificate to the issuer, then dropped (the key zeroized): an idle
//! credential keeps no key in memory.

use std::time::SystemTime;

use super::{Current, Task};
use crate::alert::{Alert, Event};
use crate::audit::AuditEvent;
use crate::cert;
use crate::engine::group::Purpose;
use zeroize::Zeroizing;

use crate::config::{FileKind, Files};
use crate::engine::disk;
use crate::store::{self, Material, Target};

/// The committed generation's material cannot be read back intact.
#[derive(Debug, thiserror::Error)]
pub(in crate::engine) enum MaterialError {
    /// Neither the state dir copy nor the published files hold it any more.
    #[error("generation {generation} cannot be read back: state dir copy: {state}; published files: {published}")]
    Unavailable {
        /// The committed generation.
        generation: u64,
        /// Why the state dir copy cannot be used.
        state: String,
        /// Why the published files cannot be used instead.
        published: String,
    },
}

impl Task {
    /// The committed generation's material, checked against the digests
    /// taken when it was validated: from the state dir, else (state dir lost
    /// or damaged) from the published files when they still hold exactly it,
    /// which are then staged again. Anything else is refused, so a repair
    /// never publishes bytes that were not validated.
    pub(in crate::engine) fn committed_material(
        &self,
        cur: &Current,
    ) -> Result<Material, MaterialError> {
        let state = match self.store.load_generation(cur.generation) {
            Ok(m) if cur.expected.matches(&m) => return Ok(m),
            Ok(_) => "its files differ from what was committed".to_string(),
            Err(e) => e.to_string(),
        };
        let unavailable = |published: String| MaterialError::Unavailable {
            generation: cur.generation,
            state: state.clone(),
            published,
        };
        let published = match from_published(&self.targets(), &self.cfg.files) {
            Ok(m) if cur.expected.matches(&m) => m,
            Ok(_) => return Err(unavailable("they no longer hold it".into())),
            Err(why) => return Err(unavailable(why)),
        };
        tracing::warn!(generation = cur.generation, reason = %state, "the state dir copy of the committed generation is unusable; staging it again from the published files, which still hold it");
        if let Err(e) = self.store.stage(cur.generation, &published) {
            tracing::error!(generation = cur.generation, error = %e, "cannot stage the committed generation again");
        }
        Ok(published)
    }

    /// The committed leaf certificate's PEM, for the issuer: cert.pem alone
    /// when it is the committed certificate, else from the full material.
    pub(in crate::engine) fn committed_cert_pem(
        &self,
        cur: &Current,
    ) -> Result<String, MaterialError> {
        let fingerprint = |pem: &str| {
            cert::pem_certs(pem.as_bytes(), "staged certificate")
                .ok()
                .and_then(|d| d.first().map(|der| cert::fingerprint(der)))
        };
        if let Ok(pem) = self.store.load_cert_pem(cur.generation) {
            if fingerprint(&pem).as_ref() == Some(&cur.info.fingerprint) {
                return Ok(pem);
            }
        }
        // Moved out; the rest of the material (the key) is zeroized here.
        self.committed_material(cur)
            .map(|mut m| std::mem::take(&mut m.cert_pem))
    }

    /// Compare the published files with the committed generation; put it
    /// back if something else changed them and it is still valid.
    pub(in crate::engine) async fn repair_files(&mut self, reason: &str) {
        // A refresh is due at once and republishes every file; until then
        // the keystore the committed generation lacks would read as drift.
        if self.own.keystore_owed {
            return;
        }
        let Some(cur) = &self.own.current else { return };
        let drift =
            store::diff_published(&self.targets(), self.cfg.swap, &cur.expected, &self.pins);
        if drift.is_empty() {
            return;
        }
        // A replaced directory is not written into: nothing to restore.
        let refused = drift.iter().any(|d| d.directory_replaced);
        let what: Vec<String> = drift
            .iter()
            .map(|d| format!("{} ({})", d.path.display(), d.reason))
            .collect();
        let generation = cur.generation;
        tracing::warn!(generation, event = "tampered", trigger = reason, files = %what.join(", "), "managed files changed behind rekey's back");
        let mut alert = Alert::new(
            Event::Tampered,
            &self.cfg.name,
            "certificate",
            format!(
                "managed files changed behind rekey's back: {}",
                what.join(", ")
            ),
        );
        alert.generation = Some(generation);
        self.alerter.raise(alert);
        if refused {
            let why = format!("{}; not restored: rekey writes nothing into a replaced directory (put it back, or restart rekey to accept the new one)", what.join(", "));
            self.audit.gen(
                &self.cfg,
                AuditEvent::Tampered,
                generation,
                &cur.info.fingerprint,
                crate::audit::AuditOutcome::Refused,
                Some(&why),
            );
            return;
        }
        self.audit
            .tampered(&self.cfg, generation, &cur.info.fingerprint, &what);
        if cur.info.not_after <= SystemTime::now() {
            return; // expired: the due logic rotates instead
        }
        self.restore_committed("tampering").await;
    }

    /// A write refused because a target's directory was replaced behind
    /// rekey's back (see [`crate::store::Pins`]): say so as `tampered`
    /// (WARN, alert, audit record). Other errors are the caller's to report.
    pub(in crate::engine) fn tampered_dir(&self, e: &store::StoreError) {
        if !e.is_tamper() {
            return;
        }
        let generation = self.own.current.as_ref().map(|c| c.generation);
        tracing::warn!(generation, event = "tampered", error = %e, "refusing to write: a target directory was replaced behind rekey's back");
        let mut alert = Alert::new(
            Event::Tampered,
            &self.cfg.name,
            "certificate",
            e.to_string(),
        );
        alert.generation = generation;
        self.alerter.raise(alert);
        self.audit.cert(
            &self.cfg,
            AuditEvent::Tampered,
            crate::audit::AuditOutcome::Refused,
            Some(&e.to_string()),
        );
    }

    /// Publish the committed generation again and reload the app. When it
    /// cannot be read back intact, rotate instead: the files stay wrong only
    /// until a new generation is issued, validated and published.
    pub(in crate::engine) async fn restore_committed(&mut self, why: &str) {
        let Some(cur) = &self.own.current else { return };
        match self.committed_material(cur) {
            Ok(material) => self.republish(&material, why).await,
            Err(e) => {
                tracing::error!(generation = cur.generation, error = %e, reason = why, event = "repair_by_rotation", "cannot restore the committed generation; rotating to replace it");
                self.own.rotate_to_repair = true;
            }
        }
    }

    /// Publish `material` (the committed generation, already checked) and
    /// reload the app.
    pub(in crate::engine) async fn republish(&mut self, material: &Material, why: &str) {
        let Some(cur) = &self.own.current else { return };
        match store::publish(&self.targets(), self.cfg.swap, material, &self.pins) {
            Ok(()) => {
                let g = self.generation_of(cur);
                tracing::info!(
                    generation = cur.generation,
                    event = "restored",
                    reason = why,
                    "restored the committed generation"
                );
                if let Err(e) = self.tell_app(&g, Purpose::Restore).await {
                    tracing::warn!(error = %e, "reload after restore failed");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot restore the committed generation");
                self.tampered_dir(&e);
            }
        }
    }
}

/// Rebuild a generation's material from its published files, split back
/// into leaf, chain, key and CA the way [`Material::render`] joined them;
/// what no PEM file holds comes from the DER files or the keystore (whose
/// bytes are kept as they are). The caller checks the result against the
/// committed digests, so a wrong split (or a file holding anything else) is
/// refused, never published.
fn from_published(targets: &[Target], files: &Files) -> Result<Material, String> {
    let read = |kind: FileKind| -> Result<Option<Zeroizing<String>>, String> {
        let Some(t) = targets.iter().find(|t| t.kind == kind) else {
            return Ok(None);
        };
        let mut bytes =
            store::read_published(&t.path).map_err(|e| format!("{}: {e}", t.path.display()))?;
        // Moved out without a copy; a rejected buffer is zeroized explicitly.
        String::from_utf8(std::mem::take(&mut *bytes))
            .map(|s| Some(Zeroizing::new(s)))
            .map_err(|e| {
                drop(Zeroizing::new(e.into_bytes()));
                format!("{} is not PEM text", t.path.display())
            })
    };
    let has = |kind: FileKind| targets.iter().any(|t| t.kind == kind);
    let binary = if [FileKind::CertDer, FileKind::KeyDer, FileKind::Pkcs12]
        .into_iter()
        .any(has)
    {
        disk::binary::read_binary(files).map_err(|s| s.describe())?
    } else {
        disk::binary::Binary::default()
    };
    let (fullchain, bundle) = (read(FileKind::Fullchain)?, read(FileKind::Bundle)?);
    // The bundle is key, leaf, chain; the fullchain leaf, chain.
    let (bundle_key, bundle_rest) = bundle.as_deref().map_or(("", ""), |b| first_block(b));
    let joined = fullchain.as_deref().map_or(bundle_rest, |f| f.as_str());
    let (leaf, mut chain_rest) = first_block(joined);
    let pem_of = |d: &[u8]| disk::pem_encode("CERTIFICATE", d);
    let binary_chain: String = binary
        .certs
        .iter()
        .flat_map(|c| c.iter().skip(1))
        .map(|d| pem_of(d))
        .collect();
    if joined.is_empty() {
        chain_rest = &binary_chain;
    }
    let cert_pem = match read(FileKind::Cert)? {
        Some(c) => c.to_string(),
        None if !leaf.is_empty() => leaf.to_string(),
        None => match binary.certs.as_ref().and_then(|c| c.first()) {
            Some(d) => pem_of(d),
            None => return Err("no file holds the certificate".into()),
        },
    };
    let key_pem = match (read(FileKind::Key)?, binary.key_pem) {
        (Some(k), _) => k,
        (None, _) if !bundle_key.is_empty() => Zeroizing::new(bundle_key.to_string()),
        (None, Some(k)) => k,
        (None, None) => return Err("no file holds the private key".into()),
    };
    let chain_pem = match read(FileKind::Chain)? {
        Some(c) => c.to_string(),
        None => chain_rest.to_string(),
    };
    Ok(Material {
        cert_pem,
        chain_pem,
        key_pem,
        ca_pem: read(FileKind::Ca)?.map(|c| c.to_string()),
        pkcs12: binary.pkcs12,
    })
}

/// Split PEM text after its first block's END line (and its newline).
fn first_block(text: &str) -> (&str, &str) {
    let Some(end) = text.find("-----END ") else {
        return ("", text);
    };
    let cut = text[end..].find('\n').map_or(text.len(), |nl| end + nl + 1);
    text.split_at(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Expected, SwapMode};

    fn block(label: &str, body: &str) -> String {
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    fn material() -> Material {
        Material {
            cert_pem: block("CERTIFICATE", "leaf"),
            chain_pem: block("CERTIFICATE", "int1") + &block("CERTIFICATE", "int2"),
            key_pem: Zeroizing::new(block("PRIVATE KEY", "key")),
            ca_pem: Some(block("CERTIFICATE", "root")),
            pkcs12: None,
        }
    }

    fn targets(dir: &std::path::Path, kinds: &[(FileKind, &str)]) -> Vec<Target> {
        kinds
            .iter()
            .map(|(kind, name)| Target {
                kind: *kind,
                path: dir.join(name),
                mode: 0o600,
                uid: None,
                gid: None,
            })
            .collect()
    }

    #[test]
    fn published_files_rebuild_exactly_the_committed_material() {
        use FileKind::*;
        let layouts: &[&[(FileKind, &str)]] = &[
            &[(Cert, "cert.pem"), (Key, "key.pem")],
            &[
                (Fullchain, "fullchain.pem"),
                (Key, "key.pem"),
                (Ca, "ca.pem"),
            ],
            &[(Bundle, "bundle.pem")],
            &[(Cert, "cert.pem"), (Chain, "chain.pem"), (Key, "key.pem")],
            &[
                (Cert, "c.pem"),
                (Key, "k.pem"),
                (Fullchain, "f.pem"),
                (Ca, "ca.pem"),
            ],
        ];
        for layout in layouts {
            let dir = tempfile::tempdir().unwrap();
            let t = targets(dir.path(), layout);
            let m = material();
            store::publish(&t, SwapMode::Rename, &m, &store::Pins::default()).unwrap();
            let expected = Expected::of(&t, &m);
            let back = from_published(&t, &Files::default()).unwrap();
            assert!(expected.matches(&back), "{layout:?}");
        }
    }

    #[test]
    fn published_files_holding_anything_else_are_refused() {
        use FileKind::*;
        let dir = tempfile::tempdir().unwrap();
        let t = targets(
            dir.path(),
            &[(Fullchain, "fullchain.pem"), (Key, "key.pem")],
        );
        let m = material();
        store::publish(&t, SwapMode::Rename, &m, &store::Pins::default()).unwrap();
        let expected = Expected::of(&t, &m);
        // Another valid-looking key: the digests tell it apart.
        std::fs::write(dir.path().join("key.pem"), block("PRIVATE KEY", "other")).unwrap();
        assert!(!expected.matches(&from_published(&t, &Files::default()).unwrap()));
        std::fs::remove_file(dir.path().join("key.pem")).unwrap();
        assert!(from_published(&t, &Files::default()).is_err());
    }

    #[test]
    fn first_block_splits_after_the_end_line() {
        let two = block("A", "x") + &block("B", "y");
        assert_eq!(
            first_block(&two),
            (block("A", "x").as_str(), block("B", "y").as_str())
        );
        assert_eq!(first_block("no pem"), ("", "no pem"));
        assert_eq!(first_block("-----END A-----"), ("-----END A-----", ""));
    }
}
