//! Passwords: parsing new ones, and hashing and verifying with argon2id off
//! the async runtime.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{AppError, AppResult};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted, in characters (bounds hashing work).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// A new password that meets the length rules. Its `Debug` hides the value.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// Parses a new password; `field` names the input field in the error.
    pub fn parse(raw: &str, field: &str) -> Result<Self, AppError> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(AppError::bad_input(
                field,
                format!("password must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(AppError::bad_input(
                field,
                format!("password must be at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// At most this many hashes run at once per CPU: each takes 19 MiB and a
/// core for tens of milliseconds, so a flood of sign-ins queues here
/// instead of exhausting memory through the blocking pool.
const HASHES_PER_CPU: usize = 2;

fn hashing_permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Semaphore::new(cpus * HASHES_PER_CPU)
    })
}

/// Runs `work` on the blocking pool once a hashing permit is free.
async fn with_hashing_permit<T: Send + 'static>(
    work: impl FnOnce() -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    let _permit = hashing_permits()
        .acquire()
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("hashing permits closed: {e}")))?;
    tokio::task::spawn_blocking(work).await?
}

/// argon2id with OWASP's parameters: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` into a PHC string on the blocking pool.
pub async fn hash_password(password: Password) -> AppResult<String> {
    with_hashing_permit(move || hash_blocking(&password.0)).await
}

fn hash_blocking(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("hashing a password failed: {e}")))
}

/// Checks `candidate` against a stored hash on the blocking pool. With no
/// stored hash (unknown account) it verifies against a fixed dummy hash, so
/// the answer takes as long as for a real account, and returns false.
pub async fn verify_password(candidate: String, stored_hash: Option<String>) -> AppResult<bool> {
    with_hashing_permit(move || {
        let known = stored_hash.is_some();
        let hash = match stored_hash {
            Some(hash) => hash,
            None => dummy_hash()?.to_owned(),
        };
        let parsed = PasswordHash::new(&hash).map_err(|e| {
            AppError::Internal(anyhow::anyhow!("stored password hash is malformed: {e}"))
        })?;
        let matches = hasher()
            .verify_password(candidate.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
}

fn dummy_hash() -> AppResult<&'static str> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let hash = hash_blocking("flowpilot-timing-equalizer")?;
    Ok(DUMMY.get_or_init(|| hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_passwords_are_refused() {
        assert!(Password::parse("123456789", "password").is_err());
        assert!(Password::parse("1234567890", "password").is_ok());
    }

    #[test]
    fn password_debug_output_hides_the_value() {
        let password = Password::parse("correct horse battery", "password").unwrap();
        assert_eq!(format!("{password:?}"), "Password(***)");
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hash = hash_password(Password::parse("correct horse battery", "p").unwrap())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            verify_password("correct horse battery".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify_password("wrong horse battery".into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(
            !verify_password("correct horse battery".into(), None)
                .await
                .unwrap()
        );
    }
}
