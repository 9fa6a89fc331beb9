//! Sealing the one secret FlowPilot must read back: a user's TOTP secret.
//!
//! XChaCha20-Poly1305 (random 24-byte nonces, so no nonce bookkeeping) under
//! a key derived with HKDF-SHA256 from `FLOWPILOT_ENCRYPTION_KEY`, kept apart
//! from the JWT secret so that rotating one does not lock out the other.
//! Each sealed value is bound to its owner through the associated data, so
//! a value copied onto another row does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::error::{AppError, AppResult};

/// The format tag in front of every sealed value, so the scheme can change.
const VERSION: &str = "v1";
const HKDF_SALT: &[u8] = b"flowpilot";
const HKDF_INFO: &[u8] = b"flowpilot sealed secrets v1";
const NONCE_LEN: usize = 24;

/// Seals and opens secrets at rest.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// A sealer keyed from `encryption_key` (validated at start-up).
    pub fn new(encryption_key: &str) -> Self {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(HKDF_SALT), encryption_key.as_bytes())
            .expand(HKDF_INFO, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Seals `plaintext` for the owner `context`: `v1:` and the base64 of
    /// nonce and ciphertext.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> AppResult<String> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| AppError::Internal(anyhow::anyhow!("sealing a secret failed")))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(format!("{VERSION}:{}", STANDARD_NO_PAD.encode(sealed)))
    }

    /// Opens what [`Sealer::seal`] made for the same `context`. A value
    /// sealed under another key, for another owner, or altered is an
    /// internal error: it means the key changed or the row was tampered with.
    pub fn open(&self, sealed: &str, context: &[u8]) -> AppResult<Vec<u8>> {
        let unreadable = || {
            AppError::Internal(anyhow::anyhow!(
                "a sealed secret does not open: FLOWPILOT_ENCRYPTION_KEY changed or the value was altered"
            ))
        };
        let encoded = sealed
            .strip_prefix(VERSION)
            .and_then(|rest| rest.strip_prefix(':'))
            .ok_or_else(unreadable)?;
        let bytes = STANDARD_NO_PAD.decode(encoded).map_err(|_| unreadable())?;
        if bytes.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| unreadable())?;
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| unreadable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "an-encryption-key-that-is-long-enough-000";

    #[test]
    fn a_sealed_secret_opens_for_its_owner_only() {
        let sealer = Sealer::new(KEY);
        let sealed = sealer.seal(b"totp secret", b"user-1").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("totp secret"));
        assert_eq!(sealer.open(&sealed, b"user-1").unwrap(), b"totp secret");
        assert!(sealer.open(&sealed, b"user-2").is_err());
    }

    #[test]
    fn sealing_twice_gives_different_values() {
        let sealer = Sealer::new(KEY);
        assert_ne!(
            sealer.seal(b"secret", b"u").unwrap(),
            sealer.seal(b"secret", b"u").unwrap()
        );
    }

    #[test]
    fn another_key_or_an_altered_value_does_not_open() {
        let sealed = Sealer::new(KEY).seal(b"secret", b"u").unwrap();
        let other = Sealer::new("another-encryption-key-that-is-long-enough");
        assert!(other.open(&sealed, b"u").is_err());
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(Sealer::new(KEY).open(&altered, b"u").is_err());
        assert!(Sealer::new(KEY).open("v0:abc", b"u").is_err());
    }
}
