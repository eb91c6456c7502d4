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

    /// A loaded generation `g` whose keystore is missing (a keystore file
    /// added to the config) or no longer opens with the password configured
    /// now (the password file changed) is encoded again and staged again in
    /// place. True when that happened: the published keystore must then be
    /// replaced (the caller republishes).
    pub(in crate::engine) fn refresh_keystore(
        &self,
        g: u64,
        material: &mut Material,
    ) -> Result<bool, String> {
        let encoded = self.encode(material).map_err(|e| e.to_string())?;
        if encoded {
            self.store
                .stage(g, material)
                .map_err(|e| format!("cannot stage the re-encoded keystore: {e}"))?;
            tracing::info!(credential = %self.cfg.name, generation = g, event = "keystore_encoded", "encoded the PKCS#12 keystore again for the password configured now");
        }
        Ok(encoded)
    }
}
