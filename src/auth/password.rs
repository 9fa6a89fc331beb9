//! Passwords: parsing new ones (length and a list of common ones), and
//! hashing and verifying with argon2id on a bounded pool of threads of its
//! own, off the async runtime.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::OnceLock;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, oneshot};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

use crate::error::{AppError, AppResult};
use crate::limits::HashingLimits;

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
        if is_common(raw) {
            return Err(AppError::bad_input(
                field,
                "this password is among the most common ones; choose another",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl Password {
    /// A password already in use, taken as it is (today's rules may be
    /// stricter than those it was chosen under), to hash it anew.
    pub(super) fn rehashing(existing: String) -> Self {
        Self(existing)
    }
}

/// Whether `password` is in the built-in list of common passwords.
fn is_common(password: &str) -> bool {
    static COMMON: OnceLock<HashSet<&'static str>> = OnceLock::new();
    let common = COMMON.get_or_init(|| {
        include_str!("common_passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    });
    common.contains(password.trim().to_lowercase().as_str())
}

/// The threads that compute password hashes: a fixed number (one per core
/// by default), each taking one job at a time, behind a bounded queue. A
/// check that finds the queue full is RATE_LIMITED at once rather than
/// waiting: each hash holds 19 MiB and a core for tens of milliseconds, so a
/// flood of sign-ins must not pile up in memory or starve the runtime. The
/// threads end when the last handle is dropped.
#[derive(Clone)]
pub struct Hashers {
    jobs: mpsc::Sender<Job>,
    /// One permit per hash running or queued.
    admission: Arc<Semaphore>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Hashers {
    /// Starts the hashing threads the limits ask for.
    pub fn new(limits: &HashingLimits) -> anyhow::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = limits.hashers();
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("flowpilot-hasher-{n}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self {
            jobs,
            admission: Arc::new(Semaphore::new(threads + limits.password_hash_queue)),
        })
    }

    /// Runs `work` on a hashing thread, or refuses at once when every
    /// thread is busy and the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> AppResult<T> + Send + 'static,
    ) -> AppResult<T> {
        let permit =
            self.admission
                .clone()
                .try_acquire_owned()
                .map_err(|_| AppError::RateLimited {
                    retry_after_secs: 1,
                })?;
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The permit is held until the hash is done, even when the
            // request that asked for it has gone.
            let _permit = permit;
            let _ = reply.send(work());
        });
        self.jobs
            .send(job)
            .map_err(|_| AppError::Internal(anyhow::anyhow!("the hashing threads have stopped")))?;
        answer
            .await
            .map_err(|_| AppError::Internal(anyhow::anyhow!("a hashing thread stopped")))?
    }

    /// Hashes `password` into a PHC string.
    pub async fn hash(&self, password: Password) -> AppResult<String> {
        self.run(move || hash_blocking(&password.0)).await
    }

    /// Checks `candidate` against a stored hash. With no stored hash
    /// (unknown account) it verifies against a fixed dummy hash, so the
    /// answer takes as long as for a real account, and returns false.
    pub async fn verify(&self, candidate: String, stored_hash: Option<String>) -> AppResult<bool> {
        self.run(move || {
            let known = stored_hash.is_some();
            let hash = match stored_hash {
                Some(hash) => hash,
                None => dummy_hash()?.to_owned(),
            };
            let matches = verify_blocking(candidate.as_bytes(), &hash)?;
            Ok(known && matches)
        })
        .await
    }
}

/// argon2id with OWASP's parameters: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, current_params())
}

fn current_params() -> Params {
    Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
}

/// Whether a stored hash was made otherwise than [`hash_password`] makes
/// them now (another algorithm, version or cost), so it should be replaced
/// at the next sign-in, while the password is at hand.
pub fn needs_rehash(stored_hash: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored_hash) else {
        return true;
    };
    let current = current_params();
    let same_params = Params::try_from(&hash).is_ok_and(|params| {
        params.m_cost() == current.m_cost()
            && params.t_cost() == current.t_cost()
            && params.p_cost() == current.p_cost()
    });
    hash.algorithm != Algorithm::Argon2id.ident()
        || hash.version != Some(Version::V0x13.into())
        || !same_params
}

thread_local! {
    /// This thread's Argon2 working memory, kept between hashes: a hasher
    /// thread holds one block of it for its whole life instead of asking
    /// the allocator for 19 MiB per hash.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `work` with this thread's working memory, grown to `blocks`.
fn with_memory<T>(blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        work(&mut memory[..blocks])
    })
}

fn hashing_failed(err: impl std::fmt::Display) -> AppError {
    AppError::Internal(anyhow::anyhow!("hashing a password failed: {err}"))
}

fn hash_blocking(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(hashing_failed)?;
    let params = current_params();
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(params.block_count(), |memory| {
        hasher().hash_password_into_with_memory(
            password.as_bytes(),
            salt_bytes,
            &mut output,
            memory,
        )
    })
    .map_err(hashing_failed)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(hashing_failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).map_err(hashing_failed)?),
    };
    Ok(hash.to_string())
}

/// Whether `candidate` hashes to the stored PHC string, with the stored
/// algorithm, version and parameters, compared in constant time.
fn verify_blocking(candidate: &[u8], stored: &str) -> AppResult<bool> {
    let malformed = |e: &dyn std::fmt::Display| {
        AppError::Internal(anyhow::anyhow!("stored password hash is malformed: {e}"))
    };
    let parsed = PasswordHash::new(stored).map_err(|e| malformed(&e))?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| malformed(&e))?;
    let version = match parsed.version {
        Some(version) => Version::try_from(version).map_err(|e| malformed(&e))?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|e| malformed(&e))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(malformed(&"no salt or no hash"));
    };
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| malformed(&e))?;
    let mut output = vec![0u8; expected.len()];
    with_memory(params.block_count(), |memory| {
        Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
            candidate,
            salt_bytes,
            &mut output,
            memory,
        )
    })
    .map_err(hashing_failed)?;
    Ok(output.ct_eq(expected.as_bytes()).into())
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
    use argon2::password_hash::PasswordHasher;

    use super::*;

    fn hashers() -> Hashers {
        Hashers::new(&HashingLimits {
            password_hashers: 1,
            password_hash_queue: 4,
        })
        .unwrap()
    }

    async fn hash_password(password: Password) -> AppResult<String> {
        hashers().hash(password).await
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(Password::parse("123456789", "password").is_err());
        assert!(Password::parse("tenchars!!", "password").is_ok());
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for common in ["1234567890", "Password1234", "QWERTYUIOP", "iloveyou123"] {
            let refused = Password::parse(common, "password").unwrap_err();
            assert!(
                matches!(refused, AppError::BadUserInput { .. }),
                "{common:?} was not refused as input: {refused:?}"
            );
        }
        assert!(Password::parse("correct horse battery", "password").is_ok());
    }

    #[tokio::test]
    async fn hashes_with_other_parameters_need_rehashing_and_current_ones_do_not() {
        let current = hash_password(Password::parse("correct horse battery", "p").unwrap())
            .await
            .unwrap();
        assert!(!needs_rehash(&current));
        let weaker = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse battery", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(needs_rehash(&weaker));
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, current_params())
            .hash_password(b"correct horse battery", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(needs_rehash(&argon2i));
        assert!(needs_rehash("not a hash"));
    }

    #[test]
    fn password_debug_output_hides_the_value() {
        let password = Password::parse("correct horse battery", "password").unwrap();
        assert_eq!(format!("{password:?}"), "Password(***)");
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hashers = hashers();
        let hash = hashers
            .hash(Password::parse("correct horse battery", "p").unwrap())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let verify =
            |candidate: &str, stored: Option<String>| hashers.verify(candidate.to_owned(), stored);
        assert!(
            verify("correct horse battery", Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse battery", Some(hash)).await.unwrap());
        assert!(!verify("correct horse battery", None).await.unwrap());
    }

    #[tokio::test]
    async fn checks_beyond_the_threads_and_the_queue_are_rate_limited_at_once() {
        let hashers = hashers();
        let checks = (0..12).map(|_| hashers.verify("some password".into(), None));
        let answers = futures::future::join_all(checks).await;
        let refused = answers
            .iter()
            .filter(|a| matches!(a, Err(AppError::RateLimited { .. })))
            .count();
        // One thread and four queued places: five are checked, seven refused.
        assert_eq!(refused, 7, "{answers:?}");
        assert!(answers.iter().filter(|a| matches!(a, Ok(false))).count() == 5);
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_itself_verify_the_same() {
        let stored = hasher()
            .hash_password(b"correct horse battery", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify_blocking(b"correct horse battery", &stored).unwrap());
        assert!(!verify_blocking(b"correct horse batterz", &stored).unwrap());
        let ours = hash_blocking("correct horse battery").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            argon2::password_hash::PasswordVerifier::verify_password(
                &hasher(),
                b"correct horse battery",
                &parsed
            )
            .is_ok()
        );
    }
}
