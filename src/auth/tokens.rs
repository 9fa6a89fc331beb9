//! Access tokens (HS256 JWTs, algorithm pinned) and opaque refresh tokens.
//!
//! Expiry is checked against [`Clock`], not the system time, so tests can
//! move time. Refresh tokens are random and only their SHA-256 is stored.

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::{AppError, AppResult};

/// How long an access token is valid.
pub const ACCESS_TOKEN_TTL: Duration = Duration::minutes(15);
/// How long a refresh token is valid.
pub const REFRESH_TOKEN_TTL: Duration = Duration::days(7);

const ISSUER: &str = "flowpilot";
const AUDIENCE: &str = "flowpilot-api";
const ACCESS_TOKEN_TYPE: &str = "access";
/// Tolerated clock difference for `iat` between instances.
const CLOCK_SKEW: Duration = Duration::seconds(30);

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user.
    pub sub: Uuid,
    /// The session the token belongs to.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    /// Always `access`, so no other kind of token we sign is accepted here.
    pub typ: String,
}

/// Why a well-signed access token whose time is up is refused: the one
/// refusal a client answers by refreshing and trying again.
pub const ACCESS_TOKEN_EXPIRED: &str = "access token expired";

/// Signing and verification keys, built once from `FLOWPILOT_JWT_SECRET`.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(***)")
    }
}

impl TokenKeys {
    /// Keys for HS256 with `secret`.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        // Expiry is checked against the FlowPilot clock in `verify_access`.
        validation.validate_exp = false;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Signs an access token for a session; returns it with its expiry.
    pub fn issue_access(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> AppResult<(String, DateTime<Utc>)> {
        let expires_at = now + ACCESS_TOKEN_TTL;
        let claims = AccessClaims {
            sub: user_id,
            sid: session_id,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            typ: ACCESS_TOKEN_TYPE.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| {
            AppError::Internal(anyhow::anyhow!("signing an access token failed: {e}"))
        })?;
        Ok((token, expires_at))
    }

    /// Verifies signature, algorithm, issuer, audience, type and expiry.
    pub fn verify_access(&self, token: &str, clock: &Clock) -> AppResult<AccessClaims> {
        let invalid = AppError::Unauthenticated("invalid access token");
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|_| AppError::Unauthenticated("invalid access token"))?
            .claims;
        if claims.typ != ACCESS_TOKEN_TYPE {
            return Err(invalid);
        }
        let now = clock.now();
        if claims.exp <= now.timestamp() {
            return Err(AppError::Unauthenticated(ACCESS_TOKEN_EXPIRED));
        }
        if claims.iat > (now + CLOCK_SKEW).timestamp() {
            return Err(invalid);
        }
        Ok(claims)
    }
}

/// A fresh refresh token: the value given to the client, and its hash.
pub fn new_refresh_token() -> (String, String) {
    new_opaque_token("fpr")
}

/// A fresh random token (256 bits) named by `prefix`, so a leaked one is
/// recognisable: the value given to the client, and its hash.
pub fn new_opaque_token(prefix: &str) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash_token(&token);
    (token, hash)
}

/// SHA-256 of an opaque token, hex-encoded: what the database stores.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_verifies_until_it_expires() {
        let keys = TokenKeys::new("a-test-secret-that-is-long-enough-0000");
        let clock = Clock::system();
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        let (token, _) = keys.issue_access(user, session, clock.now()).unwrap();
        let claims = keys.verify_access(&token, &clock).unwrap();
        assert_eq!((claims.sub, claims.sid), (user, session));
        clock.advance(ACCESS_TOKEN_TTL);
        assert!(keys.verify_access(&token, &clock).is_err());
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let clock = Clock::system();
        let (token, _) = TokenKeys::new("another-secret-that-is-long-enough-111")
            .issue_access(Uuid::now_v7(), Uuid::now_v7(), clock.now())
            .unwrap();
        assert!(
            TokenKeys::new("a-test-secret-that-is-long-enough-0000")
                .verify_access(&token, &clock)
                .is_err()
        );
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(hash_a, hash_token(&a));
        assert_eq!(hash_a.len(), 64);
    }
}
