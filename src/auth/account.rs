//! Account upkeep: proving the email address, and changing or resetting
//! the password. Links go out by mail and carry single-use tokens.

use entity::{user, user_session};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter};

use super::one_time::{self, Issued, Purpose};
use super::rate_limit::Limited;
use super::service::{
    AuthenticatedUser, DeviceInfo, RevokeReason, announce_revoked, revoke_sessions,
};
use super::{Email, Password};
use crate::db::begin_write;
use crate::error::{AppError, AppResult};
use crate::mail::{Mail, app_link};
use crate::state::AppState;

const LINK_INVALID: &str = "this link is invalid or has expired";

/// The mail that asks a new owner to prove their address.
pub(super) fn verification_mail(state: &AppState, user: &user::Model, issued: &Issued) -> Mail {
    Mail {
        to: user.email.clone(),
        subject: "Verify your FlowPilot email address".to_owned(),
        body: format!(
            "Hello {name},\n\n\
             Confirm that this is your address by opening this link within 24 hours:\n\n\
             {link}\n\n\
             If you did not create a FlowPilot account, ignore this message.\n",
            name = user.display_name,
            link = app_link(&state.config.settings, "verify-email", &issued.token),
        ),
    }
}

/// Marks the address the token was mailed to verified; returns the user.
/// A token works once; an unknown, spent or expired one is BAD_USER_INPUT.
pub async fn verify_email(state: &AppState, token: &str) -> AppResult<user::Model> {
    let invalid = || AppError::bad_input("token", LINK_INVALID);
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let found = one_time::find_usable(&txn, token, Purpose::EmailVerification, now)
        .await?
        .ok_or_else(invalid)?;
    if !one_time::spend(&txn, found.id, now).await? {
        return Err(invalid());
    }
    user::Entity::update_many()
        .col_expr(user::Column::EmailVerifiedAt, Expr::value(now))
        .filter(user::Column::Id.eq(found.user_id))
        .filter(user::Column::EmailVerifiedAt.is_null())
        .exec(&txn)
        .await?;
    let user = user::Entity::find_by_id(found.user_id)
        .one(&txn)
        .await?
        .ok_or_else(invalid)?;
    txn.commit().await?;
    tracing::info!(user_id = %user.id, "email address verified");
    Ok(user)
}

/// Mails the viewer a new verification link; earlier links stop working.
/// CONFLICT once the address is verified.
pub async fn resend_verification(
    state: &AppState,
    viewer: &AuthenticatedUser,
    device: &DeviceInfo,
) -> AppResult<()> {
    let user = &viewer.user;
    let now = state.clock.now();
    state
        .rate_limiter
        .check(
            Limited::VerificationEmail,
            device.ip.as_deref(),
            Some(&user.email),
            now,
        )
        .await?;
    if user.email_verified_at.is_some() {
        return Err(AppError::Conflict(
            "the email address is already verified".to_owned(),
        ));
    }
    let txn = begin_write(&state.db).await?;
    let issued = one_time::issue(&txn, user.id, Purpose::EmailVerification, now).await?;
    txn.commit().await?;
    state.mailer.send(verification_mail(state, user, &issued));
    Ok(())
}

/// Replaces the viewer's password after checking the current one, and ends
/// every other session of theirs. Returns the user and how many sessions
/// ended.
pub async fn change_password(
    state: &AppState,
    viewer: &AuthenticatedUser,
    current_password: String,
    new_password: Password,
    device: &DeviceInfo,
) -> AppResult<(user::Model, usize)> {
    let user = &viewer.user;
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
        .verify(current_password, Some(user.password_hash.clone()))
        .await?
    {
        return Err(AppError::bad_input(
            "currentPassword",
            "the current password is wrong",
        ));
    }
    let password_hash = state.hashers.hash(new_password).await?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.eq(user.id))
        .exec(&txn)
        .await?;
    // A reset link mailed earlier would undo the change.
    one_time::spend_all(&txn, user.id, Purpose::PasswordReset, now).await?;
    let others = Condition::all()
        .add(user_session::Column::UserId.eq(user.id))
        .add(user_session::Column::Id.ne(viewer.session_id));
    let ended = revoke_sessions(&txn, others, RevokeReason::PasswordChanged, now).await?;
    let user = user::Entity::find_by_id(user.id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("user"))?;
    txn.commit().await?;
    let count = ended.len();
    tracing::info!(user_id = %user.id, sessions_ended = count, "password changed");
    if count > 0 {
        announce_revoked(state, ended).await;
    }
    state
        .mailer
        .send(password_changed_mail(&user, "your other devices were"));
    Ok((user, count))
}

/// Tells the owner their password changed; `signed_out` says which devices
/// were signed out.
fn password_changed_mail(user: &user::Model, signed_out: &str) -> Mail {
    Mail {
        to: user.email.clone(),
        subject: "Your FlowPilot password was changed".to_owned(),
        body: format!(
            "Hello {name},\n\n\
             The password of your FlowPilot account was just changed, and {signed_out} \
             signed out. If this was not you, reset your password now.\n",
            name = user.display_name
        ),
    }
}

/// Mails a reset link valid one hour to `email`, if an account has it.
/// Answers the same, at once, whether or not one does: the lookup and the
/// mail happen in the background, so neither the answer nor its timing
/// tells whether the address is registered.
pub async fn request_password_reset(
    state: &AppState,
    email: Email,
    device: &DeviceInfo,
) -> AppResult<()> {
    state
        .rate_limiter
        .check(
            Limited::PasswordReset,
            device.ip.as_deref(),
            Some(email.as_str()),
            state.clock.now(),
        )
        .await?;
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(error) = mail_reset_link(&state, &email).await {
            tracing::error!(error = ?error, "sending a password reset link failed");
        }
    });
    Ok(())
}

async fn mail_reset_link(state: &AppState, email: &Email) -> AppResult<()> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let Some(user) = user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(&txn)
        .await?
    else {
        return Ok(());
    };
    let issued = one_time::issue(&txn, user.id, Purpose::PasswordReset, now).await?;
    txn.commit().await?;
    state.mailer.send(Mail {
        to: user.email.clone(),
        subject: "Reset your FlowPilot password".to_owned(),
        body: format!(
            "Hello {name},\n\n\
             Someone asked to reset the password of your FlowPilot account. \
             To choose a new one, open this link within an hour:\n\n\
             {link}\n\n\
             If it was not you, ignore this message: your password stays as it is.\n",
            name = user.display_name,
            link = app_link(&state.config.settings, "reset-password", &issued.token),
        ),
    });
    Ok(())
}

/// Sets a new password with a mailed reset token, then ends every session
/// of the account, lifts a lockout, and marks the address verified (the
/// link reached it). The token works once.
pub async fn reset_password(
    state: &AppState,
    token: &str,
    new_password: Password,
) -> AppResult<()> {
    let invalid = || AppError::bad_input("token", LINK_INVALID);
    // Check the token before the costly hashing, and spend it after.
    one_time::find_usable(&state.db, token, Purpose::PasswordReset, state.clock.now())
        .await?
        .ok_or_else(invalid)?;
    let password_hash = state.hashers.hash(new_password).await?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let found = one_time::find_usable(&txn, token, Purpose::PasswordReset, now)
        .await?
        .ok_or_else(invalid)?;
    if !one_time::spend(&txn, found.id, now).await? {
        return Err(invalid());
    }
    let user = user::Entity::find_by_id(found.user_id)
        .one(&txn)
        .await?
        .ok_or_else(invalid)?;
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .col_expr(
            user::Column::LockedUntil,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .col_expr(user::Column::FailuresCountedFrom, Expr::value(now))
        .col_expr(
            user::Column::EmailVerifiedAt,
            Expr::value(user.email_verified_at.unwrap_or(now)),
        )
        .filter(user::Column::Id.eq(user.id))
        .exec(&txn)
        .await?;
    one_time::spend_all(&txn, user.id, Purpose::PasswordReset, now).await?;
    let ended = revoke_sessions(
        &txn,
        user_session::Column::UserId.eq(user.id),
        RevokeReason::PasswordReset,
        now,
    )
    .await?;
    txn.commit().await?;
    tracing::info!(user_id = %user.id, sessions_ended = ended.len(), "password reset");
    if !ended.is_empty() {
        announce_revoked(state, ended).await;
    }
    state
        .mailer
        .send(password_changed_mail(&user, "every device was"));
    Ok(())
}
