//! What a resolver knows about the request it serves: the application
//! state, the viewer, the client's device and the request's loaders.

use std::sync::Arc;

use async_graphql::{Context, ID};
use uuid::Uuid;

use super::batch::Passes;
use super::loaders::Loaders;
use crate::auth::api_keys;
use crate::auth::service::{self, AuthenticatedUser, DeviceInfo};
use crate::auth::tokens::ACCESS_TOKEN_EXPIRED;
use crate::error::{AppError, AppResult};
use crate::orgs::access::AccessEnded;
use crate::orgs::principal::{KeyGrant, Principal};
use crate::state::AppState;

/// Who is making the request.
#[derive(Clone, Debug)]
pub enum Viewer {
    /// No credentials were sent.
    Anonymous,
    /// A valid access token for a live session. Shared: every request and
    /// subscription of a socket points to the one its `connection_init`
    /// signed in.
    User(Arc<AuthenticatedUser>),
    /// A live API key: acts in its one organization with its role.
    ApiKey(KeyGrant),
    /// A well-signed access token whose time is up: refresh it and retry.
    Expired,
    /// Credentials were sent but are invalid or revoked, or an API key
    /// that expired: retrying them will not help.
    Rejected(&'static str),
    /// Credentials could not be checked (the database failed); logged.
    Unavailable,
}

impl Viewer {
    /// Resolves the viewer from an `Authorization` header value (`Bearer
    /// <access token>` or `Bearer fp_…` for an API key, scheme
    /// case-insensitive).
    pub async fn from_authorization(state: &AppState, authorization: Option<&str>) -> Self {
        let Some(value) = authorization else {
            return Self::Anonymous;
        };
        let token = value
            .trim()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Self::Rejected("the Authorization header must be `Bearer <access token>`");
        };
        let authenticated = if api_keys::is_api_key(token) {
            api_keys::authenticate(state, token).await.map(Self::ApiKey)
        } else {
            service::authenticate(state, token)
                .await
                .map(|user| Self::User(Arc::new(user)))
        };
        match authenticated {
            Ok(viewer) => viewer,
            Err(AppError::Unauthenticated(ACCESS_TOKEN_EXPIRED)) => Self::Expired,
            Err(AppError::Unauthenticated(reason)) => Self::Rejected(reason),
            Err(err) => {
                tracing::error!(error = ?err, "authenticating a request failed");
                Self::Unavailable
            }
        }
    }

    /// The signed-in user; UNAUTHENTICATED when anonymous, FORBIDDEN for
    /// an API key (what only a person may do).
    pub fn user(&self) -> AppResult<&AuthenticatedUser> {
        if let Self::ApiKey(_) = self {
            return Err(AppError::Forbidden(
                "an API key cannot do this: sign in as a user",
            ));
        }
        self.optional_user()?
            .ok_or(AppError::Unauthenticated("sign in to do this"))
    }

    /// Who acts in an organization: the signed-in user or the API key;
    /// UNAUTHENTICATED when anonymous.
    pub fn principal(&self) -> AppResult<Principal> {
        match self {
            Self::ApiKey(grant) => Ok(Principal::ApiKey(*grant)),
            _ => Ok(Principal::User(self.user()?.user.id)),
        }
    }

    /// The session or API key the request was authorized with, if any.
    pub fn credential_id(&self) -> Option<Uuid> {
        match self {
            Self::User(user) => Some(user.session_id),
            Self::ApiKey(grant) => Some(grant.key_id),
            Self::Anonymous | Self::Expired | Self::Rejected(_) | Self::Unavailable => None,
        }
    }

    /// The signed-in user, `None` when anonymous or an API key, and an
    /// error when the credentials sent were bad.
    pub fn optional_user(&self) -> AppResult<Option<&AuthenticatedUser>> {
        match self {
            Self::Anonymous | Self::ApiKey(_) => Ok(None),
            Self::User(user) => Ok(Some(user)),
            Self::Expired => Err(AppError::Unauthenticated(ACCESS_TOKEN_EXPIRED)),
            Self::Rejected(reason) => Err(AppError::Unauthenticated(reason)),
            Self::Unavailable => Err(AppError::Internal(anyhow::anyhow!(
                "authentication was unavailable"
            ))),
        }
    }
}

/// Everything a resolver needs about its request, attached once per request.
pub struct RequestContext {
    /// The instance's shared state.
    pub state: AppState,
    /// Who is asking.
    pub viewer: Viewer,
    /// Where the request comes from (recorded on new sessions).
    pub device: DeviceInfo,
    /// This request's loaders, made when a resolver first needs one.
    loaders: std::sync::OnceLock<Loaders>,
    /// The request's passes over its fields, which its loaders batch by.
    pub passes: Arc<Passes>,
    /// Raised when a subscription of this request ended because its
    /// member's access did.
    pub access_ended: AccessEnded,
}

impl RequestContext {
    /// Bundles a request's context; its loaders are made on first use,
    /// so a request that reads nothing through them allocates none.
    pub fn new(state: AppState, viewer: Viewer, device: DeviceInfo) -> Arc<Self> {
        Arc::new(Self {
            state,
            viewer,
            device,
            loaders: std::sync::OnceLock::new(),
            passes: Arc::default(),
            access_ended: AccessEnded::default(),
        })
    }

    /// This request's loaders.
    pub fn loaders(&self) -> &Loaders {
        self.loaders
            .get_or_init(|| Loaders::new(&self.state, &self.passes))
    }

    /// The context of the request `ctx` belongs to. Every request executed
    /// by FlowPilot's handlers carries one.
    pub fn of<'a>(ctx: &'a Context<'_>) -> &'a Self {
        ctx.data_unchecked::<Arc<Self>>()
    }
}

/// Parses a GraphQL `ID` into a UUID; BAD_USER_INPUT at `field` otherwise.
pub fn parse_id(id: &ID, field: &str) -> AppResult<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| AppError::bad_input(field, "not a valid id"))
}
