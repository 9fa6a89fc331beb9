//! Registration, sign-in, refresh and per-request authentication.
//!
//! Knows nothing of GraphQL: it takes parsed input and returns models and
//! tokens. Every token it hands out names a `user_sessions` row, and every
//! request re-reads that row, so revoking it takes effect at once on every
//! instance.

use chrono::{DateTime, Duration, Utc};
use entity::{refresh_token, user, user_session};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::tokens::{REFRESH_TOKEN_TTL, hash_token, new_refresh_token};
use super::{DisplayName, Email, Password, hash_password, verify_password};
use crate::app::AppState;
use crate::db::{begin_write, is_unique_violation};
use crate::error::{AppError, AppResult};

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
    let existing = user::Entity::find()
        .filter(user::Column::Email.eq(registration.email.as_str()))
        .one(&state.db)
        .await?;
    if existing.is_some() {
        return Err(taken());
    }
    let password_hash = hash_password(registration.password).await?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let user = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(registration.email.as_str().to_owned()),
        display_name: Set(registration.display_name.into_inner()),
        password_hash: Set(password_hash),
        created_at: Set(now),
        updated_at: Set(now),
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
    let issued = start_session(&txn, state, user, device, now).await?;
    txn.commit().await?;
    tracing::info!(user_id = %issued.user.id, "account registered");
    Ok(issued)
}

/// Signs in with email and password. An unknown email and a wrong password
/// get the same answer, after the same amount of hashing work.
pub async fn login(
    state: &AppState,
    email: &str,
    password: String,
    device: DeviceInfo,
) -> AppResult<IssuedSession> {
    let user = match Email::parse(email, "email") {
        Ok(email) => {
            user::Entity::find()
                .filter(user::Column::Email.eq(email.as_str()))
                .one(&state.db)
                .await?
        }
        Err(_) => None,
    };
    let verified =
        verify_password(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    let Some(user) = user.filter(|_| verified) else {
        return Err(AppError::Unauthenticated(INVALID_CREDENTIALS));
    };
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let issued = start_session(&txn, state, user, device, now).await?;
    txn.commit().await?;
    Ok(issued)
}

/// Exchanges a refresh token for a new pair. The token is single use: once
/// exchanged, presenting it again is refused.
pub async fn refresh(state: &AppState, refresh_token: &str) -> AppResult<IssuedSession> {
    let refused = || AppError::Unauthenticated(INVALID_REFRESH_TOKEN);
    let now = state.clock.now();
    // Unknown, used and expired tokens are refused before taking the write
    // lock; the conditional update below settles concurrent exchanges.
    let current = refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(hash_token(refresh_token)))
        .one(&state.db)
        .await?
        .ok_or_else(refused)?;
    if current.used_at.is_some() || current.expires_at <= now {
        return Err(refused());
    }
    let txn = begin_write(&state.db).await?;
    let (session, user) = user_session::Entity::find_by_id(current.session_id)
        .find_also_related(user::Entity)
        .one(&txn)
        .await?
        .ok_or_else(refused)?;
    let user = user.ok_or_else(refused)?;
    if session.revoked_at.is_some() {
        return Err(refused());
    }
    // Conditional on the token still being unused: of two concurrent
    // exchanges of the same token, exactly one wins.
    let marked = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
        .filter(refresh_token::Column::Id.eq(current.id))
        .filter(refresh_token::Column::UsedAt.is_null())
        .exec(&txn)
        .await?;
    if marked.rows_affected != 1 {
        return Err(refused());
    }
    let issued = issue_tokens(&txn, state, user, session.id, Some(current.id), now).await?;
    txn.commit().await?;
    Ok(issued)
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
