//! GraphQL types and resolvers for identity: `viewer` and its sessions,
//! `register`, `login`, `refreshSession`, and ending sessions. Thin: parse
//! input, call the service, convert. Account upkeep is in `account_schema`,
//! MFA in `mfa_schema`.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject, Union};
use chrono::{DateTime, Utc};
use entity::{user, user_session};

use super::service::{self, IssuedSession, Registration, SessionList, SignIn};
use super::{DisplayName, Email, Password};
use crate::error::AppError;
use crate::graphql::connection::{ListConnection, PageArgs, list_connection};
use crate::graphql::context::{RequestContext, parse_id};
use crate::orgs::schema::Membership;
use crate::pagination::encode_cursor;

/// The signed-in person. Only ever the viewer: other people appear as
/// summaries that reveal nothing beyond what is shared.
pub struct User {
    id: uuid::Uuid,
    email: String,
    display_name: String,
    created_at: DateTime<Utc>,
    email_verified: bool,
    mfa_enabled: bool,
}

impl From<user::Model> for User {
    fn from(user: user::Model) -> Self {
        Self {
            id: user.id,
            email: user.email,
            display_name: user.display_name,
            created_at: user.created_at,
            email_verified: user.email_verified_at.is_some(),
            mfa_enabled: user.mfa_enabled_at.is_some(),
        }
    }
}

/// The signed-in person and their account. Only ever the viewer: other people
/// appear as `UserSummary`, which reveals nothing beyond what members share.
#[Object]
impl User {
    /// The account's id.
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    /// Lower-cased email address.
    async fn email(&self) -> &str {
        &self.email
    }

    /// The name other members see.
    async fn display_name(&self) -> &str {
        &self.display_name
    }

    /// When the account was registered.
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// Whether the owner followed the link mailed to the address.
    async fn email_verified(&self) -> bool {
        self.email_verified
    }

    /// Whether signing in asks for a TOTP or backup code.
    async fn mfa_enabled(&self) -> bool {
        self.mfa_enabled
    }

    /// The viewer's active sessions (signed-in devices), newest first.
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "At most this many (default 20, at most 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
        #[graphql(desc = "The last this many (at most 100) before `before`.")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
    ) -> async_graphql::Result<ListConnection<Session>> {
        let request = RequestContext::of(ctx);
        let current = request.viewer.user()?.session_id;
        let list = SessionList {
            window: PageArgs::new(first, after, last, before).window(SESSION_CURSOR)?,
        };
        list_connection(ctx, self.id, list, |session| {
            let cursor = encode_cursor(SESSION_CURSOR, service::position_of(&session));
            let current = session.id == current;
            Ok((cursor, Session { session, current }))
        })
        .await
    }

    /// Every organization the viewer belongs to, oldest membership first.
    async fn memberships(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Membership>> {
        let memberships = RequestContext::of(ctx)
            .loaders()
            .memberships_by_user
            .load_one(self.id)
            .await
            .map_err(AppError::from)?
            .unwrap_or_default();
        Ok(memberships.into_iter().map(Membership::from).collect())
    }
}

const SESSION_CURSOR: &str = "session";

/// A signed-in device: where it signed in from and when it was last seen.
pub struct Session {
    session: user_session::Model,
    current: bool,
}

/// A signed-in device of the viewer's: where it signed in from and when it was
/// last seen. Ending it signs that device out.
#[Object]
impl Session {
    /// The session's id, to end it with `revokeSession`.
    async fn id(&self) -> ID {
        ID(self.session.id.to_string())
    }

    /// The `User-Agent` it signed in with.
    async fn user_agent(&self) -> Option<&str> {
        self.session.user_agent.as_deref()
    }

    /// The address it signed in from.
    async fn ip(&self) -> Option<&str> {
        self.session.ip.as_deref()
    }

    /// When the device signed in.
    async fn created_at(&self) -> DateTime<Utc> {
        self.session.created_at
    }

    /// When a request last used it (updated at most once a minute).
    async fn last_seen_at(&self) -> DateTime<Utc> {
        self.session.last_seen_at
    }

    /// When it lapses unless refreshed.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.session.expires_at
    }

    /// Whether this request is made with it.
    async fn current(&self) -> bool {
        self.current
    }
}

/// A session of the viewer's to end.
#[derive(InputObject)]
pub struct RevokeSessionInput {
    /// A live session of the viewer's, as listed in `viewer.sessions`.
    pub session_id: ID,
}

/// Tokens for a new or refreshed session.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Bearer token for the `Authorization` header; valid 15 minutes.
    access_token: String,
    /// Single-use token for `refreshSession`; valid 7 days.
    refresh_token: String,
    /// When the access token stops working; refresh the session before then.
    access_token_expires_at: DateTime<Utc>,
    /// When the refresh token stops working; after that, sign in again.
    refresh_token_expires_at: DateTime<Utc>,
    /// The user signed in.
    user: User,
}

impl From<IssuedSession> for AuthPayload {
    fn from(issued: IssuedSession) -> Self {
        Self {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            access_token_expires_at: issued.access_token_expires_at,
            refresh_token_expires_at: issued.refresh_token_expires_at,
            user: issued.user.into(),
        }
    }
}

/// A second factor is required to finish signing in: pass the token and a
/// TOTP or backup code to `completeMfaLogin`.
#[derive(SimpleObject)]
pub struct MfaChallenge {
    /// Single-use; allows 5 wrong codes.
    challenge_token: String,
    /// Valid 5 minutes.
    expires_at: DateTime<Utc>,
}

impl From<SignIn> for LoginResult {
    fn from(sign_in: SignIn) -> Self {
        match sign_in {
            SignIn::Session(issued) => Self::AuthPayload((*issued).into()),
            SignIn::MfaRequired(challenge) => Self::MfaChallenge(MfaChallenge {
                challenge_token: challenge.token,
                expires_at: challenge.expires_at,
            }),
        }
    }
}

/// What `login` returns: tokens, or a challenge when MFA is on.
#[derive(Union)]
pub enum LoginResult {
    AuthPayload(AuthPayload),
    MfaChallenge(MfaChallenge),
}

/// A new account.
#[derive(InputObject)]
pub struct RegisterInput {
    /// Trimmed and lower-cased; must not be registered yet.
    pub email: String,
    /// 10 to 256 characters.
    pub password: String,
    /// 1 to 100 characters.
    pub display_name: String,
}

/// Credentials to sign in with.
#[derive(InputObject)]
pub struct LoginInput {
    /// Compared without regard to case.
    pub email: String,
    /// The account's password, as typed.
    pub password: String,
}

/// A refresh token to exchange.
#[derive(InputObject)]
pub struct RefreshSessionInput {
    /// The `refreshToken` of the latest `AuthPayload`.
    pub refresh_token: String,
}

/// Query complexity charged for a field that hashes a password, so that
/// one request cannot ask for many argon2 runs (see `max_query_complexity`).
pub(super) const PASSWORD_HASH_COMPLEXITY: usize = 100;

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The signed-in user; null without a token, UNAUTHENTICATED for an
    /// invalid, expired or revoked one.
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        Ok(RequestContext::of(ctx)
            .viewer
            .optional_user()?
            .map(|u| User::from(u.user.clone())))
    }
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Creates an account and signs it in. A registered email is CONFLICT.
    #[graphql(complexity = "PASSWORD_HASH_COMPLEXITY + child_complexity")]
    async fn register(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account to create.")] input: RegisterInput,
    ) -> async_graphql::Result<AuthPayload> {
        let request = RequestContext::of(ctx);
        let registration = Registration {
            email: Email::parse(&input.email, "email")?,
            password: Password::parse(&input.password, "password")?,
            display_name: DisplayName::parse(&input.display_name, "displayName")?,
        };
        Ok(
            service::register(&request.state, registration, request.device.clone())
                .await?
                .into(),
        )
    }

    /// Signs in. Wrong password and unknown email answer alike. With MFA on,
    /// answers an `MfaChallenge` instead of tokens.
    #[graphql(complexity = "PASSWORD_HASH_COMPLEXITY + child_complexity")]
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The credentials to sign in with.")] input: LoginInput,
    ) -> async_graphql::Result<LoginResult> {
        let request = RequestContext::of(ctx);
        Ok(service::login(
            &request.state,
            &input.email,
            input.password,
            request.device.clone(),
        )
        .await?
        .into())
    }

    /// Ends the current session: its tokens stop working at once and its
    /// open subscriptions close (4403).
    async fn logout(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let request = RequestContext::of(ctx);
        service::logout(&request.state, request.viewer.user()?).await?;
        Ok(true)
    }

    /// Ends every session of the viewer, this one included; returns how many.
    async fn logout_all(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let request = RequestContext::of(ctx);
        let ended = service::logout_all(&request.state, request.viewer.user()?).await?;
        Ok(i32::try_from(ended).unwrap_or(i32::MAX))
    }

    /// Ends one of the viewer's sessions; NOT_FOUND unless it is theirs and live.
    async fn revoke_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session to end.")] input: RevokeSessionInput,
    ) -> async_graphql::Result<bool> {
        let request = RequestContext::of(ctx);
        let viewer = request.viewer.user()?;
        let session_id = parse_id(&input.session_id, "sessionId")?;
        service::revoke_session(&request.state, viewer, session_id).await?;
        Ok(true)
    }

    /// Ends every session of the viewer but this one; returns how many.
    async fn revoke_other_sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let request = RequestContext::of(ctx);
        let ended = service::revoke_other_sessions(&request.state, request.viewer.user()?).await?;
        Ok(i32::try_from(ended).unwrap_or(i32::MAX))
    }

    /// Exchanges a refresh token for a new pair; the old one stops working.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The refresh token to exchange.")] input: RefreshSessionInput,
    ) -> async_graphql::Result<AuthPayload> {
        let request = RequestContext::of(ctx);
        Ok(service::refresh(&request.state, &input.refresh_token)
            .await?
            .into())
    }
}
