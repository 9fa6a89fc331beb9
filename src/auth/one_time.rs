//! Single-use tokens: email verification and password-reset links, and the
//! MFA challenge between a right password and a second factor.
//!
//! A token is random, shown once, and stored as its SHA-256. It is spent by
//! use, by a newer token of the same purpose (for mailed links), or by too
//! many wrong codes (for challenges).

use chrono::{DateTime, Duration, Utc};
use entity::one_time_token;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::tokens::{hash_token, new_opaque_token};
use crate::error::AppResult;

/// What a token is for; a token of one purpose is never accepted for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    EmailVerification,
    PasswordReset,
    MfaChallenge,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::EmailVerification => "email_verification",
            Self::PasswordReset => "password_reset",
            Self::MfaChallenge => "mfa_challenge",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::EmailVerification => "fpv",
            Self::PasswordReset => "fpp",
            Self::MfaChallenge => "fpm",
        }
    }

    /// How long a token stays valid.
    pub fn lifetime(self) -> Duration {
        match self {
            Self::EmailVerification => Duration::hours(24),
            Self::PasswordReset => Duration::hours(1),
            Self::MfaChallenge => Duration::minutes(5),
        }
    }

    /// Whether a new token spends the user's earlier ones: only the latest
    /// mailed link works, while several devices may each be mid-sign-in.
    fn supersedes(self) -> bool {
        !matches!(self, Self::MfaChallenge)
    }
}

/// A token just issued: the value for the client, and when it lapses.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Issues a `purpose` token for `user_id`.
pub async fn issue(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> AppResult<Issued> {
    if purpose.supersedes() {
        spend_all(conn, user_id, purpose, now).await?;
    }
    let (token, token_hash) = new_opaque_token(purpose.prefix());
    let expires_at = now + purpose.lifetime();
    one_time_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        purpose: Set(purpose.as_str().to_owned()),
        token_hash: Set(token_hash),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
        failed_attempts: Set(0),
    }
    .insert(conn)
    .await?;
    Ok(Issued { token, expires_at })
}

/// The unspent, unexpired `purpose` token `token` names, if any.
pub async fn find_usable(
    conn: &impl ConnectionTrait,
    token: &str,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> AppResult<Option<one_time_token::Model>> {
    Ok(one_time_token::Entity::find()
        .filter(one_time_token::Column::TokenHash.eq(hash_token(token)))
        .filter(one_time_token::Column::Purpose.eq(purpose.as_str()))
        .filter(one_time_token::Column::UsedAt.is_null())
        .filter(one_time_token::Column::ExpiresAt.gt(now))
        .one(conn)
        .await?)
}

/// Spends one token; false when it was already spent (a concurrent use won).
pub async fn spend(conn: &impl ConnectionTrait, id: Uuid, now: DateTime<Utc>) -> AppResult<bool> {
    let result = one_time_token::Entity::update_many()
        .col_expr(one_time_token::Column::UsedAt, Expr::value(now))
        .filter(one_time_token::Column::Id.eq(id))
        .filter(one_time_token::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Spends every unspent `purpose` token of `user_id`.
pub async fn spend_all(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> AppResult<()> {
    one_time_token::Entity::update_many()
        .col_expr(one_time_token::Column::UsedAt, Expr::value(now))
        .filter(one_time_token::Column::UserId.eq(user_id))
        .filter(one_time_token::Column::Purpose.eq(purpose.as_str()))
        .filter(one_time_token::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// Counts a wrong code against a challenge, spending it at `limit`; returns
/// the attempts left.
pub async fn count_failure(
    conn: &impl ConnectionTrait,
    challenge: &one_time_token::Model,
    limit: i32,
    now: DateTime<Utc>,
) -> AppResult<i32> {
    let failed = challenge.failed_attempts + 1;
    let mut update = one_time_token::Entity::update_many()
        .col_expr(one_time_token::Column::FailedAttempts, Expr::value(failed))
        .filter(one_time_token::Column::Id.eq(challenge.id));
    if failed >= limit {
        update = update.col_expr(one_time_token::Column::UsedAt, Expr::value(now));
    }
    update.exec(conn).await?;
    Ok((limit - failed).max(0))
}
