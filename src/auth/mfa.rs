//! TOTP multi-factor sign-in: enrolling an authenticator, backup codes,
//! turning MFA off, and completing a sign-in that a right password began.
//!
//! The TOTP secret is sealed at rest (see [`super::sealing`]); the last
//! accepted time step is kept so that no code is accepted twice; backup
//! codes are stored as hashes and spent on use. Every code check is rate
//! limited, and wrong codes at sign-in count towards the lockout like
//! wrong passwords.

use chrono::{DateTime, Utc};
use entity::{mfa_backup_code, one_time_token, user};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::one_time::{self, Purpose};
use super::rate_limit::Limited;
use super::service::{
    Attempt, AuthenticatedUser, DeviceInfo, IssuedSession, finish_sign_in,
    lock_after_repeated_failures, lockout_mail, record_attempt,
};
use super::totp::{self, Enrollment};
use crate::db::{begin_write, locked};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Wrong codes one challenge allows before it is spent.
pub const CHALLENGE_ATTEMPTS: i32 = 5;

const CHALLENGE_INVALID: &str = "the sign-in challenge is invalid or has expired; sign in again";
const CODE_WRONG: &str = "the code is wrong or was already used";

fn mfa_off() -> AppError {
    AppError::Conflict("MFA is not on".to_owned())
}

/// Starts enrolling an authenticator: a new secret, sealed on the user until
/// [`enable`] proves the app has it. CONFLICT while MFA is on; calling it
/// again replaces the pending secret.
pub async fn setup(state: &AppState, viewer: &AuthenticatedUser) -> AppResult<Enrollment> {
    let user = &viewer.user;
    if user.mfa_enabled_at.is_some() {
        return Err(AppError::Conflict(
            "MFA is already on; turn it off to enroll another authenticator".to_owned(),
        ));
    }
    let secret = totp::new_secret();
    let enrollment = totp::enrollment(&secret, &user.email)?;
    let sealed = state.sealer.seal(&secret, user.id.as_bytes())?;
    let updated = user::Entity::update_many()
        .col_expr(user::Column::MfaSecret, Expr::value(sealed))
        .col_expr(user::Column::MfaLastStep, Expr::value(Option::<i64>::None))
        .filter(user::Column::Id.eq(user.id))
        .filter(user::Column::MfaEnabledAt.is_null())
        .exec(&state.db)
        .await?;
    if updated.rows_affected == 0 {
        return Err(AppError::Conflict("MFA is already on".to_owned()));
    }
    Ok(enrollment)
}

/// Turns MFA on with a current code from the enrolled authenticator;
/// returns the user and the backup codes, shown this once.
pub async fn enable(
    state: &AppState,
    viewer: &AuthenticatedUser,
    code: &str,
    device: &DeviceInfo,
) -> AppResult<(user::Model, Vec<String>)> {
    limit_code_attempts(state, &viewer.user, device).await?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let user = locked_user(&txn, viewer.user.id).await?;
    if user.mfa_enabled_at.is_some() {
        return Err(AppError::Conflict("MFA is already on".to_owned()));
    }
    let Some(sealed) = &user.mfa_secret else {
        return Err(AppError::Conflict(
            "no authenticator is being enrolled; call setupMfa first".to_owned(),
        ));
    };
    let secret = state.sealer.open(sealed, user.id.as_bytes())?;
    let step = totp::matching_step(&secret, code, now)?
        .ok_or_else(|| AppError::bad_input("code", CODE_WRONG))?;
    user::Entity::update_many()
        .col_expr(user::Column::MfaEnabledAt, Expr::value(now))
        .col_expr(user::Column::MfaLastStep, Expr::value(step))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.eq(user.id))
        .exec(&txn)
        .await?;
    let codes = replace_backup_codes(&txn, user.id, now).await?;
    let user = locked_user(&txn, user.id).await?;
    txn.commit().await?;
    tracing::info!(user_id = %user.id, "MFA turned on");
    Ok((user, codes))
}

/// Replaces the viewer's backup codes, after a TOTP or backup code;
/// returns the user and the new codes.
pub async fn regenerate_backup_codes(
    state: &AppState,
    viewer: &AuthenticatedUser,
    code: &str,
    device: &DeviceInfo,
) -> AppResult<(user::Model, Vec<String>)> {
    limit_code_attempts(state, &viewer.user, device).await?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let user = locked_user(&txn, viewer.user.id).await?;
    if user.mfa_enabled_at.is_none() {
        return Err(mfa_off());
    }
    let factor = second_factor(&txn, state, &user, code, now)
        .await?
        .ok_or_else(|| AppError::bad_input("code", CODE_WRONG))?;
    spend_factor(&txn, &user, factor, now).await?;
    let codes = replace_backup_codes(&txn, user.id, now).await?;
    txn.commit().await?;
    tracing::info!(user_id = %user.id, "MFA backup codes replaced");
    Ok((user, codes))
}

/// Turns MFA off, after the password and a TOTP or backup code; the secret
/// and backup codes are deleted. Returns the user.
pub async fn disable(
    state: &AppState,
    viewer: &AuthenticatedUser,
    password: String,
    code: &str,
    device: &DeviceInfo,
) -> AppResult<user::Model> {
    let user = &viewer.user;
    if user.mfa_enabled_at.is_none() {
        return Err(mfa_off());
    }
    state
        .rate_limiter
        .check(
            Limited::Login,
            device.ip.as_deref(),
            Some(&user.email),
            state.clock.now(),
        )
        .await?;
    if !state
        .hashers
        .verify(password, Some(user.password_hash.clone()))
        .await?
    {
        return Err(AppError::bad_input("password", "the password is wrong"));
    }
    limit_code_attempts(state, user, device).await?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let user = locked_user(&txn, user.id).await?;
    if user.mfa_enabled_at.is_none() {
        return Err(mfa_off());
    }
    second_factor(&txn, state, &user, code, now)
        .await?
        .ok_or_else(|| AppError::bad_input("code", CODE_WRONG))?;
    user::Entity::update_many()
        .col_expr(user::Column::MfaSecret, Expr::value(Option::<String>::None))
        .col_expr(
            user::Column::MfaEnabledAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(user::Column::MfaLastStep, Expr::value(Option::<i64>::None))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.eq(user.id))
        .exec(&txn)
        .await?;
    mfa_backup_code::Entity::delete_many()
        .filter(mfa_backup_code::Column::UserId.eq(user.id))
        .exec(&txn)
        .await?;
    one_time::spend_all(&txn, user.id, Purpose::MfaChallenge, now).await?;
    let user = locked_user(&txn, user.id).await?;
    txn.commit().await?;
    tracing::info!(user_id = %user.id, "MFA turned off");
    Ok(user)
}

/// Finishes a sign-in that a right password began, with a TOTP or backup
/// code. A wrong code is BAD_USER_INPUT and counts against the challenge
/// (5 per challenge) and towards the account's lockout; a spent, expired
/// or unknown challenge, or a locked account, is UNAUTHENTICATED.
pub async fn complete_login(
    state: &AppState,
    challenge_token: &str,
    code: &str,
    device: DeviceInfo,
) -> AppResult<IssuedSession> {
    let refused = || AppError::Unauthenticated(CHALLENGE_INVALID);
    let challenge = one_time::find_usable(
        &state.db,
        challenge_token,
        Purpose::MfaChallenge,
        state.clock.now(),
    )
    .await?
    .ok_or_else(refused)?;
    let user = user::Entity::find_by_id(challenge.user_id)
        .one(&state.db)
        .await?
        .ok_or_else(refused)?;
    limit_code_attempts(state, &user, &device).await?;
    let now = state.clock.now();
    let ip = device.ip.clone();
    let txn = begin_write(&state.db).await?;
    // The user's row orders concurrent attempts on all their challenges.
    let user = locked_user(&txn, user.id).await?;
    let challenge = one_time_token::Entity::find_by_id(challenge.id)
        .one(&txn)
        .await?
        .filter(|c| c.used_at.is_none() && c.expires_at > now)
        .ok_or_else(refused)?;
    if user.mfa_enabled_at.is_none() {
        return Err(refused());
    }
    if user.locked_until.is_some_and(|until| until > now) {
        record_attempt(
            &txn,
            &user.email,
            Some(user.id),
            ip.as_deref(),
            Attempt::Locked,
            now,
        )
        .await?;
        txn.commit().await?;
        return Err(refused());
    }
    let Some(factor) = second_factor(&txn, state, &user, code, now).await? else {
        let left = one_time::count_failure(&txn, &challenge, CHALLENGE_ATTEMPTS, now).await?;
        record_attempt(
            &txn,
            &user.email,
            Some(user.id),
            ip.as_deref(),
            Attempt::WrongCode,
            now,
        )
        .await?;
        let locked_now = lock_after_repeated_failures(&txn, state, &user, now).await?;
        txn.commit().await?;
        if locked_now {
            tracing::warn!(user_id = %user.id, "account locked after repeated wrong codes");
            state.mailer.send(lockout_mail(state, &user));
        }
        return Err(AppError::bad_input(
            "code",
            format!("{CODE_WRONG} ({left} attempts left for this sign-in)"),
        ));
    };
    spend_factor(&txn, &user, factor, now).await?;
    one_time::spend(&txn, challenge.id, now).await?;
    record_attempt(
        &txn,
        &user.email,
        Some(user.id),
        ip.as_deref(),
        Attempt::Succeeded,
        now,
    )
    .await?;
    let issued = finish_sign_in(&txn, state, user, device, now).await?;
    txn.commit().await?;
    Ok(issued)
}

/// A second factor that matched, to spend.
#[derive(Clone, Copy, Debug)]
enum Factor {
    /// A TOTP code of this time step.
    Totp(i64),
    /// This backup code.
    Backup(Uuid),
}

/// Checks `code` as a TOTP code of a step after the last accepted one, then
/// as an unspent backup code.
async fn second_factor(
    conn: &impl ConnectionTrait,
    state: &AppState,
    user: &user::Model,
    code: &str,
    now: DateTime<Utc>,
) -> AppResult<Option<Factor>> {
    let Some(sealed) = &user.mfa_secret else {
        return Ok(None);
    };
    // A secret that no longer opens (the encryption key changed) leaves the
    // backup codes as the way in.
    match state.sealer.open(sealed, user.id.as_bytes()) {
        Ok(secret) => {
            if let Some(step) = totp::matching_step(&secret, code, now)? {
                let fresh = user.mfa_last_step.is_none_or(|last| step > last);
                return Ok(fresh.then_some(Factor::Totp(step)));
            }
        }
        Err(error) => {
            tracing::error!(user_id = %user.id, error = ?error, "the TOTP secret does not open; only backup codes are accepted");
        }
    }
    let Some(code_hash) = totp::backup_code_hash(code) else {
        return Ok(None);
    };
    let backup = mfa_backup_code::Entity::find()
        .filter(mfa_backup_code::Column::UserId.eq(user.id))
        .filter(mfa_backup_code::Column::CodeHash.eq(code_hash))
        .filter(mfa_backup_code::Column::UsedAt.is_null())
        .one(conn)
        .await?;
    Ok(backup.map(|b| Factor::Backup(b.id)))
}

/// Records that `factor` was used, so it is not accepted again.
async fn spend_factor(
    conn: &impl ConnectionTrait,
    user: &user::Model,
    factor: Factor,
    now: DateTime<Utc>,
) -> AppResult<()> {
    match factor {
        Factor::Totp(step) => {
            user::Entity::update_many()
                .col_expr(user::Column::MfaLastStep, Expr::value(step))
                .filter(user::Column::Id.eq(user.id))
                .exec(conn)
                .await?;
        }
        Factor::Backup(id) => {
            mfa_backup_code::Entity::update_many()
                .col_expr(mfa_backup_code::Column::UsedAt, Expr::value(now))
                .filter(mfa_backup_code::Column::Id.eq(id))
                .exec(conn)
                .await?;
        }
    }
    Ok(())
}

/// Deletes the user's backup codes and stores ten new ones; returns them.
async fn replace_backup_codes(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> AppResult<Vec<String>> {
    mfa_backup_code::Entity::delete_many()
        .filter(mfa_backup_code::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    let (codes, hashes): (Vec<String>, Vec<String>) = totp::new_backup_codes().into_iter().unzip();
    let rows = hashes
        .into_iter()
        .map(|code_hash| mfa_backup_code::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user_id),
            code_hash: Set(code_hash),
            created_at: Set(now),
            used_at: Set(None),
        });
    mfa_backup_code::Entity::insert_many(rows)
        .exec(conn)
        .await?;
    Ok(codes)
}

async fn locked_user(conn: &impl ConnectionTrait, user_id: Uuid) -> AppResult<user::Model> {
    locked(user::Entity::find_by_id(user_id), conn)
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("user"))
}

async fn limit_code_attempts(
    state: &AppState,
    user: &user::Model,
    device: &DeviceInfo,
) -> AppResult<()> {
    state
        .rate_limiter
        .check(
            Limited::MfaCode,
            device.ip.as_deref(),
            Some(&user.email),
            state.clock.now(),
        )
        .await
}
