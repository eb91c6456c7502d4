//! The PKCS#12 keystore a generation carries when its files include one:
//! encoded once, with the password configured at that moment, and kept with
//! the generation (see [`crate::keystore`] for why it is not re-encoded).

use super::Task;
use crate::keystore::{self, KeystoreError};
use crate::store::Material;

impl Task {
    /// Give `material` the keystore its files need, encoded with the
    /// password configured now. One it already carries is kept when it
    /// holds this generation's certificate and key and opens with that
    /// password. True when it was (re)encoded.
    pub(in crate::engine) fn encode(&self, material: &mut Material) -> Result<bool, KeystoreError> {
        let Some(opts) = self.cfg.files.pkcs12_options.as_ref() else {
            return Ok(false);
        };
        // Key derivation costs milliseconds: off the async workers' hot path.
        crate::store::blocking(|| {
            if let Some(p12) = &material.pkcs12 {
                if keystore::pkcs12_holds(p12, &material.cert_pem, &material.key_pem, opts)? {
                    return Ok(false);
                }
            }
            let p12 = keystore::pkcs12(
                &material.cert_pem,
                &material.chain_pem,
                &material.key_pem,
                opts,
            )?;
            material.pkcs12 = Some(p12);
            Ok(true)
        })
    }

    /// Whether `material` carries the keystore its files need, holding its
    /// certificate and key and opening with the password configured now
    /// (trivially true without a `pkcs12` file). A password file that
    /// cannot be read counts as not fitting: the refresh then says why.
    pub(in crate::engine) fn keystore_fits(&self, material: &Material) -> bool {
        let Some(opts) = self.cfg.files.pkcs12_options.as_ref() else {
            return true;
        };
        material.pkcs12.as_ref().is_some_and(|p12| {
            crate::store::blocking(|| {
                keystore::pkcs12_holds(p12, &material.cert_pem, &material.key_pem, opts)
                    .unwrap_or(false)
            })
        })
    }
}
