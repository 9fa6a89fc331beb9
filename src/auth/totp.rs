//! TOTP (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps, the totp-rs
//! defaults) and backup codes:
//! the second factor's arithmetic, without storage.
//!
//! Verification reports the time step a code matched, so the caller can
//! accept each step once; backup codes are random, shown once, and only
//! their SHA-256 is kept (80 random bits make a fast hash safe).

use chrono::{DateTime, Utc};
use qrcode::QrCode;
use qrcode::render::svg;
use rand::RngCore;
use totp_rs::{Builder, Secret, Totp};

use super::tokens::hash_token;
use crate::error::{AppError, AppResult};

/// The name authenticator apps show for FlowPilot accounts.
pub const ISSUER: &str = "FlowPilot";
/// How many backup codes a user holds at a time.
pub const BACKUP_CODE_COUNT: usize = 10;
const SECRET_BYTES: usize = 20;
const BACKUP_CODE_BYTES: usize = 10;
const BACKUP_CODE_GROUP: usize = 4;

/// A fresh random TOTP secret (160 bits, as RFC 4226 recommends).
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

fn totp(secret: &[u8], account: &str) -> AppResult<Totp> {
    Builder::new()
        .with_secret(Secret::from(secret.to_vec()))
        .with_issuer(Some(ISSUER))
        // A colon would split the otpauth label; addresses rarely hold one.
        .with_account_name(account.replace(':', "_"))
        .build()
        .map_err(|e| AppError::Internal(anyhow::anyhow!("building a TOTP failed: {e}")))
}

/// What an authenticator app needs to add the account.
#[derive(Debug)]
pub struct Enrollment {
    /// The secret in base32, for typing in by hand.
    pub secret: String,
    /// `otpauth://totp/FlowPilot:<email>?secret=…&issuer=FlowPilot`.
    pub otpauth_uri: String,
    /// The URI as a QR code, in SVG.
    pub qr_code_svg: String,
}

/// The enrollment details for `secret` on `account` (the email address).
pub fn enrollment(secret: &[u8], account: &str) -> AppResult<Enrollment> {
    let totp = totp(secret, account)?;
    let otpauth_uri = totp
        .to_url()
        .map_err(|e| AppError::Internal(anyhow::anyhow!("building the otpauth URI failed: {e}")))?;
    let qr_code_svg = QrCode::new(otpauth_uri.as_bytes())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("drawing the QR code failed: {e}")))?
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Ok(Enrollment {
        secret: totp.secret().to_base32(),
        otpauth_uri,
        qr_code_svg,
    })
}

/// The time step `code` matches at `now`, allowing one step either side
/// for clock drift; None when it matches none (or is not a TOTP code).
pub fn matching_step(secret: &[u8], code: &str, now: DateTime<Utc>) -> AppResult<Option<i64>> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.chars().all(|c| c.is_ascii_digit()) {
        return Ok(None);
    }
    let Ok(time) = u64::try_from(now.timestamp()) else {
        return Ok(None);
    };
    Ok(totp(secret, "")?
        .check(&code, time)
        .and_then(|step| i64::try_from(step).ok()))
}

/// Ten fresh backup codes: each as shown to the user
/// (`xxxx-xxxx-xxxx-xxxx`), with the hash to store.
pub fn new_backup_codes() -> Vec<(String, String)> {
    (0..BACKUP_CODE_COUNT)
        .map(|_| {
            let mut bytes = [0u8; BACKUP_CODE_BYTES];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let plain = base32::encode(base32::Alphabet::Rfc4648Lower { padding: false }, &bytes);
            let shown = plain
                .as_bytes()
                .chunks(BACKUP_CODE_GROUP)
                .map(|group| std::str::from_utf8(group).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("-");
            (shown, hash_token(&plain))
        })
        .collect()
}

/// The stored hash of a backup code as typed (any case, dashes and spaces
/// optional); None when it cannot be a backup code.
pub fn backup_code_hash(typed: &str) -> Option<String> {
    let normalized: String = typed
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let is_code = normalized.len() == BACKUP_CODE_BYTES * 8 / 5
        && normalized
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c));
    is_code.then(|| hash_token(&normalized))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_code_matches_its_step_and_the_steps_beside_it_only() {
        let secret = new_secret();
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let code_at = |at: DateTime<Utc>| {
            totp(&secret, "")
                .unwrap()
                .generate(u64::try_from(at.timestamp()).unwrap())
                .to_string()
        };
        let step = now.timestamp() / 30;
        let code = code_at(now);
        assert_eq!(matching_step(&secret, &code, now).unwrap(), Some(step));
        let drift = chrono::Duration::seconds(30);
        assert_eq!(
            matching_step(&secret, &code, now + drift).unwrap(),
            Some(step)
        );
        assert_eq!(
            matching_step(&secret, &code, now - drift).unwrap(),
            Some(step)
        );
        assert_eq!(
            matching_step(&secret, &code, now + drift * 2).unwrap(),
            None
        );
        assert_eq!(matching_step(&secret, "12345", now).unwrap(), None);
        assert_eq!(matching_step(&secret, "abcdef", now).unwrap(), None);
    }

    #[test]
    fn the_enrollment_names_flowpilot_and_carries_the_secret() {
        let secret = new_secret();
        let enrollment = enrollment(&secret, "ada@example.com").unwrap();
        assert!(
            enrollment
                .otpauth_uri
                .starts_with("otpauth://totp/FlowPilot:ada%40example.com?")
        );
        assert!(
            enrollment
                .otpauth_uri
                .contains(&format!("secret={}", enrollment.secret))
        );
        assert!(enrollment.qr_code_svg.contains("<svg"));
    }

    #[test]
    fn backup_codes_are_distinct_and_their_hashes_ignore_case_and_dashes() {
        let codes = new_backup_codes();
        assert_eq!(codes.len(), BACKUP_CODE_COUNT);
        let distinct: std::collections::HashSet<_> = codes.iter().map(|(shown, _)| shown).collect();
        assert_eq!(distinct.len(), BACKUP_CODE_COUNT);
        let (code, stored) = &codes[0];
        assert_eq!(code.len(), 19);
        assert_eq!(backup_code_hash(code).as_ref(), Some(stored));
        assert_eq!(
            backup_code_hash(&code.replace('-', "").to_uppercase()).as_ref(),
            Some(stored)
        );
        assert_eq!(backup_code_hash("123456"), None);
        assert_eq!(backup_code_hash("aaaa-bbbb-cccc-ddd1"), None);
    }
}
