//! Registration, sign-in, refresh and per-request authentication.
//!
//! Knows nothing of GraphQL: it takes parsed input and returns models and
//! tokens. Every token it hands out names a `user_sessions` row, and every
//! request re-reads that row, so revoking it takes effect at once on every
//! instance.

use chrono::{DateTime, Duration, Utc};
use entity::{login_attempt, refresh_token, user, user_session};
use sea_orm::sea_query::Expr;
use sea_orm::sea_query::IntoCondition;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect, Set,
};
use uuid::Uuid;

use super::one_time::{self, Purpose};
use super::password::needs_rehash;
use super::rate_limit::Limited;
use super::tokens::{REFRESH_TOKEN_TTL, hash_token, new_refresh_token};
use super::{DisplayName, Email, Password, account};
use crate::db::{begin_write, is_unique_violation, locked};
use crate::error::{AppError, AppResult};
use crate::events::{BusMessage, Topic};
use crate::mail::Mail;
use crate::pagination::{ListQuery, Position, RowList, Window};
use crate::state::AppState;

/// `last_seen_at` is written at most this often per session.
const LAST_SEEN_INTERVAL: Duration = Duration::minutes(1);

const INVALID_CREDENTIALS: &str = "invalid email or password";
const INVALID_REFRESH_TOKEN: &str = "invalid refresh token";
const SESSION_ENDED: &str = "session has ended";

/// Where a sign-in comes from, recorded on the session.
#[derive(Clone, Debug, Default)]
pub struct DeviceInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A new registration, already parsed.
#[derive(Debug)]
pub struct Registration {
    pub email: Email,
    pub password: Password,
    pub display_name: DisplayName,
}

/// Tokens handed to a client for one session.
#[derive(Debug)]
pub struct IssuedSession {
    pub user: user::Model,
    pub session_id: Uuid,
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_token_expires_at: DateTime<Utc>,
}

/// The signed-in user behind a request, with the session its token names.
#[derive(Clone, Debug)]
pub struct AuthenticatedUser {
    pub user: user::Model,
    pub session_id: Uuid,
}

/// Creates an account and signs it in. A taken email is CONFLICT.
pub async fn register(
    state: &AppState,
    registration: Registration,
    device: DeviceInfo,
) -> AppResult<IssuedSession> {
    let taken = || AppError::Conflict("an account with this email already exists".to_owned());
    let email = Some(registration.email.as_str());
    state
        .rate_limiter
        .check(
            Limited::Register,
            device.ip.as_deref(),
            email,
            state.clock.now(),
        )
        .await?;
    let existing = user::Entity::find()
        .filter(user::Column::Email.eq(registration.email.as_str()))
        .one(&state.db)
        .await?;
    if existing.is_some() {
        return Err(taken());
    }
    let password_hash = state.hashers.hash(registration.password).await?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let user = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(registration.email.as_str().to_owned()),
        display_name: Set(registration.display_name.into_inner()),
        password_hash: Set(password_hash),
        created_at: Set(now),
        updated_at: Set(now),
        locked_until: Set(None),
        failures_counted_from: Set(None),
        email_verified_at: Set(None),
        mfa_secret: Set(None),
        mfa_enabled_at: Set(None),
        mfa_last_step: Set(None),
    }
    .insert(&txn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            taken()
        } else {
            e.into()
        }
    })?;
    let verification = one_time::issue(&txn, user.id, Purpose::EmailVerification, now).await?;
    let issued = start_session(&txn, state, user, device, now).await?;
    txn.commit().await?;
    tracing::info!(user_id = %issued.user.id, "account registered");
    state.mailer.send(account::verification_mail(
        state,
        &issued.user,
        &verification,
    ));
    Ok(issued)
}

/// What a right password leads to.
#[derive(Debug)]
pub enum SignIn {
    /// Signed in.
    Session(Box<IssuedSession>),
    /// MFA is on: a second factor must complete the sign-in.
    MfaRequired(one_time::Issued),
}

/// Signs in with email and password. An unknown email, a wrong password
/// and a locked account get the same answer, after the same hashing work.
/// Every attempt is recorded; enough failures of one account within the
/// lockout window lock it, and its owner is told by mail. A hash made with
/// weaker parameters than today's is replaced while the password is at hand.
pub async fn login(
    state: &AppState,
    email: &str,
    password: String,
    device: DeviceInfo,
) -> AppResult<SignIn> {
    let invalid = || AppError::Unauthenticated(INVALID_CREDENTIALS);
    let typed: String = email.trim().to_lowercase().chars().take(254).collect();
    state
        .rate_limiter
        .check(
            Limited::Login,
            device.ip.as_deref(),
            Some(&typed),
            state.clock.now(),
        )
        .await?;
    let user = match Email::parse(email, "email") {
        Ok(email) => {
            user::Entity::find()
                .filter(user::Column::Email.eq(email.as_str()))
                .one(&state.db)
                .await?
        }
        Err(_) => None,
    };
    let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
    let verified = state
        .hashers
        .verify(password.clone(), stored_hash.clone())
        .await?;
    let rehashed = match stored_hash {
        // A busy hashing queue only postpones the rehash to a later sign-in.
        Some(hash) if verified && needs_rehash(&hash) => {
            match state.hashers.hash(Password::rehashing(password)).await {
                Ok(rehashed) => Some(rehashed),
                Err(AppError::RateLimited { .. }) => None,
                Err(err) => return Err(err),
            }
        }
        _ => None,
    };
    let ip = device.ip.as_deref();
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    // Lock the account's row: concurrent failures are counted one by one.
    let user = match user {
        Some(user) => {
            locked(user::Entity::find_by_id(user.id), &txn)
                .one(&txn)
                .await?
        }
        None => None,
    };
    let Some(user) = user else {
        record_attempt(&txn, &typed, None, ip, Attempt::UnknownEmail, now).await?;
        txn.commit().await?;
        return Err(invalid());
    };
    if user.locked_until.is_some_and(|until| until > now) {
        record_attempt(&txn, &typed, Some(user.id), ip, Attempt::Locked, now).await?;
        txn.commit().await?;
        return Err(invalid());
    }
    if !verified {
        record_attempt(&txn, &typed, Some(user.id), ip, Attempt::WrongPassword, now).await?;
        let locked_now = lock_after_repeated_failures(&txn, state, &user, now).await?;
        txn.commit().await?;
        if locked_now {
            tracing::warn!(user_id = %user.id, "account locked after repeated failed sign-ins");
            state.mailer.send(lockout_mail(state, &user));
        }
        return Err(invalid());
    }
    if let Some(hash) = rehashed {
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash))
            .filter(user::Column::Id.eq(user.id))
            .exec(&txn)
            .await?;
        tracing::info!(user_id = %user.id, "password hash upgraded to the current parameters");
    }
    if user.mfa_enabled_at.is_some() {
        // Failures keep counting until the second factor is right too.
        record_attempt(&txn, &typed, Some(user.id), ip, Attempt::MfaRequired, now).await?;
        let challenge = one_time::issue(&txn, user.id, Purpose::MfaChallenge, now).await?;
        txn.commit().await?;
        return Ok(SignIn::MfaRequired(challenge));
    }
    record_attempt(&txn, &typed, Some(user.id), ip, Attempt::Succeeded, now).await?;
    let issued = finish_sign_in(&txn, state, user, device, now).await?;
    txn.commit().await?;
    Ok(SignIn::Session(Box::new(issued)))
}

/// Opens a session for a user who proved every factor, and stops counting
/// their earlier failures.
pub(super) async fn finish_sign_in(
    conn: &impl ConnectionTrait,
    state: &AppState,
    user: user::Model,
    device: DeviceInfo,
    now: DateTime<Utc>,
) -> AppResult<IssuedSession> {
    user::Entity::update_many()
        .col_expr(user::Column::FailuresCountedFrom, Expr::value(now))
        .filter(user::Column::Id.eq(user.id))
        .exec(conn)
        .await?;
    start_session(conn, state, user, device, now).await
}

/// How a sign-in attempt ended, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attempt {
    Succeeded,
    UnknownEmail,
    WrongPassword,
    Locked,
    /// The password was right; a second factor was asked for.
    MfaRequired,
    /// The second factor was wrong.
    WrongCode,
}

impl Attempt {
    fn reason(self) -> &'static str {
        match self {
            Self::Succeeded => "ok",
            Self::UnknownEmail => "unknown_email",
            Self::WrongPassword => "wrong_password",
            Self::Locked => "locked",
            Self::MfaRequired => "mfa_required",
            Self::WrongCode => "wrong_code",
        }
    }

    /// Failures that count towards a lockout.
    const FAILURES: [Self; 2] = [Self::WrongPassword, Self::WrongCode];
}

pub(super) async fn record_attempt(
    conn: &impl ConnectionTrait,
    email: &str,
    user_id: Option<Uuid>,
    ip: Option<&str>,
    attempt: Attempt,
    now: DateTime<Utc>,
) -> AppResult<()> {
    login_attempt::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email.to_owned()),
        user_id: Set(user_id),
        ip: Set(ip.map(str::to_owned)),
        succeeded: Set(attempt == Attempt::Succeeded),
        reason: Set(attempt.reason().to_owned()),
        attempted_at: Set(now),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Locks `user` when its failed sign-ins within the window (and since the
/// last success or lockout) reach the threshold; returns whether it did.
pub(super) async fn lock_after_repeated_failures(
    conn: &impl ConnectionTrait,
    state: &AppState,
    user: &user::Model,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let settings = &state.config.settings;
    let window_start = now - settings.lockout_window();
    let counted_from = user
        .failures_counted_from
        .map_or(window_start, |from| from.max(window_start));
    let failures = login_attempt::Entity::find()
        .filter(login_attempt::Column::UserId.eq(user.id))
        .filter(login_attempt::Column::Reason.is_in(Attempt::FAILURES.map(Attempt::reason)))
        .filter(login_attempt::Column::AttemptedAt.gt(counted_from))
        .count(conn)
        .await?;
    if failures < u64::from(settings.lockout_threshold) {
        return Ok(false);
    }
    user::Entity::update_many()
        .col_expr(
            user::Column::LockedUntil,
            Expr::value(now + settings.lockout_duration()),
        )
        .col_expr(user::Column::FailuresCountedFrom, Expr::value(now))
        .filter(user::Column::Id.eq(user.id))
        .exec(conn)
        .await?;
    Ok(true)
}

pub(super) fn lockout_mail(state: &AppState, user: &user::Model) -> Mail {
    let minutes = state.config.settings.lockout_secs.div_ceil(60);
    Mail {
        to: user.email.clone(),
        subject: "Your FlowPilot account was locked".to_owned(),
        body: format!(
            "Hello {name},\n\n\
             Someone entered a wrong password for your FlowPilot account too many times, \
             so sign-in is locked for {minutes} minutes. If it was you, wait and try again. \
             If it was not, change your password once you can sign in.\n",
            name = user.display_name
        ),
    }
}

/// Exchanges a refresh token for a new pair. Each token is exchanged once;
/// presenting it again within the reuse grace period (two tabs refreshing
/// together) issues another pair beside the first, and after it revokes the
/// whole session: the token was copied, and every token of the session is
/// now suspect.
pub async fn refresh(state: &AppState, refresh_token: &str) -> AppResult<IssuedSession> {
    let refused = || AppError::Unauthenticated(INVALID_REFRESH_TOKEN);
    let token_hash = hash_token(refresh_token);
    let txn = begin_write(&state.db).await?;
    let current = refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(token_hash.as_str()))
        .one(&txn)
        .await?
        .ok_or_else(refused)?;
    // Concurrent exchanges of one session take turns on its row.
    let session = locked(user_session::Entity::find_by_id(current.session_id), &txn)
        .one(&txn)
        .await?
        .ok_or_else(refused)?;
    let user = user::Entity::find_by_id(session.user_id)
        .one(&txn)
        .await?
        .ok_or_else(refused)?;
    // Read the token again now that the session is locked: a concurrent
    // exchange may have used it meanwhile.
    let current = refresh_token::Entity::find_by_id(current.id)
        .one(&txn)
        .await?
        .ok_or_else(refused)?;
    let now = state.clock.now();
    if session.revoked_at.is_some() || current.expires_at <= now {
        return Err(refused());
    }
    match current.used_at {
        None => {
            refresh_token::Entity::update_many()
                .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
                .filter(refresh_token::Column::Id.eq(current.id))
                .exec(&txn)
                .await?;
        }
        Some(used_at) if now - used_at <= state.config.settings.refresh_reuse_grace() => {}
        Some(_) => {
            revoke_sessions(
                &txn,
                user_session::Column::Id.eq(session.id),
                RevokeReason::RefreshTokenReused,
                now,
            )
            .await?;
            txn.commit().await?;
            tracing::warn!(
                session_id = %session.id,
                user_id = %user.id,
                "a rotated refresh token was presented again; the session is revoked"
            );
            announce_revoked(state, vec![session.id]).await;
            return Err(refused());
        }
    }
    let issued = issue_tokens(&txn, state, user, session.id, Some(current.id), now).await?;
    txn.commit().await?;
    Ok(issued)
}

/// Why a session ended, as recorded on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    PasswordChanged,
    PasswordReset,
    LogoutAll,
    Revoked,
    OtherSessionsRevoked,
    RefreshTokenReused,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::LogoutAll => "logout_all",
            Self::Revoked => "revoked",
            Self::OtherSessionsRevoked => "other_sessions_revoked",
            Self::RefreshTokenReused => "refresh_token_reused",
        }
    }
}

/// Ends the viewer's current session.
pub async fn logout(state: &AppState, viewer: &AuthenticatedUser) -> AppResult<()> {
    let filter = user_session::Column::Id.eq(viewer.session_id);
    end_sessions(state, filter, RevokeReason::Logout).await?;
    Ok(())
}

/// Ends every session of the viewer, this one included; returns how many.
pub async fn logout_all(state: &AppState, viewer: &AuthenticatedUser) -> AppResult<usize> {
    let filter = user_session::Column::UserId.eq(viewer.user.id);
    end_sessions(state, filter, RevokeReason::LogoutAll).await
}

/// Ends one of the viewer's sessions; NOT_FOUND for a session that is not
/// theirs or has already ended.
pub async fn revoke_session(
    state: &AppState,
    viewer: &AuthenticatedUser,
    session_id: Uuid,
) -> AppResult<()> {
    let filter = Condition::all()
        .add(user_session::Column::Id.eq(session_id))
        .add(user_session::Column::UserId.eq(viewer.user.id));
    match end_sessions(state, filter, RevokeReason::Revoked).await? {
        0 => Err(AppError::NotFound("session")),
        _ => Ok(()),
    }
}

/// Ends every session of the viewer but the current one; returns how many.
pub async fn revoke_other_sessions(
    state: &AppState,
    viewer: &AuthenticatedUser,
) -> AppResult<usize> {
    let filter = Condition::all()
        .add(user_session::Column::UserId.eq(viewer.user.id))
        .add(user_session::Column::Id.ne(viewer.session_id));
    end_sessions(state, filter, RevokeReason::OtherSessionsRevoked).await
}

/// Where a session stands in a newest-first list.
pub fn position_of(session: &user_session::Model) -> Position {
    Position {
        at: session.created_at,
        id: session.id,
    }
}

/// Users' active sessions (not revoked, not lapsed when read), newest
/// first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionList {
    pub window: Window<Position>,
}

impl SessionList {
    fn rows(now: DateTime<Utc>) -> ListQuery<user_session::Entity> {
        use user_session::Column;
        let select = user_session::Entity::find()
            .filter(Column::RevokedAt.is_null())
            .filter(
                Condition::any()
                    .add(Column::ExpiresAt.is_null())
                    .add(Column::ExpiresAt.gt(now)),
            );
        ListQuery {
            select,
            parent: Column::UserId,
            parent_of: |row| row.user_id,
            order: vec![Column::CreatedAt, Column::Id],
            ascending: false,
        }
    }
}

impl RowList for SessionList {
    type Entity = user_session::Entity;
    type Key = Position;

    fn query(&self, now: chrono::DateTime<chrono::Utc>) -> ListQuery<user_session::Entity> {
        Self::rows(now)
    }

    fn window(&self) -> &Window<Position> {
        &self.window
    }
}

/// Revokes the live sessions `filter` picks, then tells every instance so
/// their open connections close. Returns how many were revoked.
pub(super) async fn end_sessions(
    state: &AppState,
    filter: impl IntoCondition,
    reason: RevokeReason,
) -> AppResult<usize> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let ended = revoke_sessions(&txn, filter, reason, now).await?;
    txn.commit().await?;
    let count = ended.len();
    if count > 0 {
        tracing::info!(
            sessions = count,
            reason = reason.as_str(),
            "sessions revoked"
        );
        announce_revoked(state, ended).await;
    }
    Ok(count)
}

/// Marks the live sessions `filter` picks revoked; returns their ids.
pub(super) async fn revoke_sessions(
    conn: &impl ConnectionTrait,
    filter: impl IntoCondition,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> AppResult<Vec<Uuid>> {
    let filter = Condition::all()
        .add(filter.into_condition())
        .add(user_session::Column::RevokedAt.is_null());
    let ids: Vec<Uuid> = user_session::Entity::find()
        .select_only()
        .column(user_session::Column::Id)
        .filter(filter.clone())
        .into_tuple()
        .all(conn)
        .await?;
    if ids.is_empty() {
        return Ok(ids);
    }
    user_session::Entity::update_many()
        .col_expr(user_session::Column::RevokedAt, Expr::value(now))
        .col_expr(
            user_session::Column::RevokedReason,
            Expr::value(reason.as_str()),
        )
        .filter(user_session::Column::Id.is_in(ids.iter().copied()))
        .exec(conn)
        .await?;
    Ok(ids)
}

/// Tells every instance (this one included) that these sessions ended.
pub(super) async fn announce_revoked(state: &AppState, session_ids: Vec<Uuid>) {
    state.revocations.revoke(&session_ids);
    state
        .bus
        .publish(Topic::Control, BusMessage::SessionsRevoked { session_ids })
        .await;
}

/// Resolves an access token to its user, re-reading the session (one query)
/// so that a revoked session is refused at once.
pub async fn authenticate(state: &AppState, access_token: &str) -> AppResult<AuthenticatedUser> {
    let claims = state.tokens.verify_access(access_token, &state.clock)?;
    let (session, user) = user_session::Entity::find_by_id(claims.sid)
        .find_also_related(user::Entity)
        .one(&state.db)
        .await?
        .ok_or(AppError::Unauthenticated(SESSION_ENDED))?;
    let user = user.ok_or(AppError::Unauthenticated(SESSION_ENDED))?;
    if session.user_id != claims.sub || session.revoked_at.is_some() {
        return Err(AppError::Unauthenticated(SESSION_ENDED));
    }
    let now = state.clock.now();
    if now - session.last_seen_at >= LAST_SEEN_INTERVAL {
        user_session::Entity::update_many()
            .col_expr(user_session::Column::LastSeenAt, Expr::value(now))
            .filter(user_session::Column::Id.eq(session.id))
            .filter(user_session::Column::LastSeenAt.lt(now - LAST_SEEN_INTERVAL))
            .exec(&state.db)
            .await?;
    }
    Ok(AuthenticatedUser {
        user,
        session_id: session.id,
    })
}

async fn start_session(
    conn: &impl ConnectionTrait,
    state: &AppState,
    user: user::Model,
    device: DeviceInfo,
    now: DateTime<Utc>,
) -> AppResult<IssuedSession> {
    let session = user_session::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user.id),
        user_agent: Set(device.user_agent.map(|ua| ua.chars().take(512).collect())),
        ip: Set(device.ip),
        created_at: Set(now),
        last_seen_at: Set(now),
        revoked_at: Set(None),
        expires_at: Set(Some(now + REFRESH_TOKEN_TTL)),
        revoked_reason: Set(None),
    }
    .insert(conn)
    .await?;
    issue_tokens(conn, state, user, session.id, None, now).await
}

async fn issue_tokens(
    conn: &impl ConnectionTrait,
    state: &AppState,
    user: user::Model,
    session_id: Uuid,
    parent_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> AppResult<IssuedSession> {
    let (refresh_token, token_hash) = new_refresh_token();
    let refresh_token_expires_at = now + REFRESH_TOKEN_TTL;
    refresh_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        session_id: Set(session_id),
        token_hash: Set(token_hash),
        parent_id: Set(parent_id),
        created_at: Set(now),
        expires_at: Set(refresh_token_expires_at),
        used_at: Set(None),
    }
    .insert(conn)
    .await?;
    if parent_id.is_some() {
        user_session::Entity::update_many()
            .col_expr(
                user_session::Column::ExpiresAt,
                Expr::value(refresh_token_expires_at),
            )
            .filter(user_session::Column::Id.eq(session_id))
            .exec(conn)
            .await?;
    }
    let (access_token, access_token_expires_at) =
        state.tokens.issue_access(user.id, session_id, now)?;
    Ok(IssuedSession {
        user,
        session_id,
        access_token,
        access_token_expires_at,
        refresh_token,
        refresh_token_expires_at,
    })
}
