//! The one error type of FlowPilot and its GraphQL `extensions.code`.
//!
//! Services return [`AppError`]; resolvers turn it into a GraphQL error with
//! `?`. Internal causes are logged (inside the request's span, so with its
//! request id) and replaced by a generic message: nothing about the database,
//! the network or a stack reaches the client.

use async_graphql::ErrorExtensions;

/// Everything that can go wrong in a request, by what the client should do.
///
/// It deliberately has no `Display` implementation: the only way to show an
/// `AppError` to a client is through [`async_graphql::Error`], which decides
/// what is safe to reveal.
#[derive(Debug)]
pub enum AppError {
    /// No valid credentials: sign in or refresh the access token.
    Unauthenticated(&'static str),
    /// Signed in, but not allowed to do this (the role, or the kind of
    /// credential, does not allow it).
    Forbidden(&'static str),
    /// A subscription's access changed while it ran (the member was removed
    /// or their role lowered): subscribe again. FORBIDDEN, with
    /// `extensions.reason` `ACCESS_CHANGED`; a WebSocket closes with 4403.
    AccessChanged,
    /// The object does not exist or the viewer may not know it exists.
    NotFound(&'static str),
    /// Input that can't be accepted; `field` is its path in the input.
    BadUserInput { field: String, message: String },
    /// The request conflicts with existing state (a taken email, say).
    Conflict(String),
    /// Too many attempts; try again after this many seconds.
    RateLimited { retry_after_secs: u64 },
    /// A failure the client cannot fix; the cause is logged, never returned.
    Internal(anyhow::Error),
}

impl AppError {
    /// Bad input at `field` (a path such as `definition.steps[2].id`).
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadUserInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) | Self::AccessChanged => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::BadUserInput { .. } => "BAD_USER_INPUT",
            Self::Conflict(_) => "CONFLICT",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The message clients see.
    pub fn public_message(&self) -> String {
        match self {
            Self::Unauthenticated(message) => (*message).to_owned(),
            Self::Forbidden(message) => (*message).to_owned(),
            Self::AccessChanged => {
                "your access to this organization changed; subscribe again".to_owned()
            }
            Self::NotFound(what) => format!("{what} not found"),
            Self::BadUserInput { message, .. } => message.clone(),
            Self::Conflict(message) => message.clone(),
            Self::RateLimited { retry_after_secs } => {
                format!("too many attempts; try again in {retry_after_secs} s")
            }
            Self::Internal(_) => "internal error".to_owned(),
        }
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Internal(err.into())
    }
}

impl From<sea_orm::TransactionError<AppError>> for AppError {
    fn from(err: sea_orm::TransactionError<AppError>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(app) => app,
        }
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::Internal(err.into())
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(err: AppError) -> Self {
        if let AppError::Internal(cause) = &err {
            tracing::error!(error = ?cause, "internal error");
        }
        let code = err.code();
        async_graphql::Error::new(err.public_message()).extend_with(|_, ext| {
            ext.set("code", code);
            if let AppError::BadUserInput { field, .. } = &err {
                ext.set("field", field.as_str());
            }
            if let AppError::RateLimited { retry_after_secs } = &err {
                ext.set("retryAfter", *retry_after_secs);
            }
            if let AppError::AccessChanged = &err {
                ext.set("reason", ACCESS_CHANGED);
            }
        })
    }
}

/// `extensions.reason` of a subscription ended by an access change.
pub const ACCESS_CHANGED: &str = "ACCESS_CHANGED";

/// Shorthand for service results.
pub type AppResult<T> = Result<T, AppError>;

/// A JSON decoding message as a client reads it: what was expected in
/// JSON's terms (a whole number, a list, an object), never the server's
/// own type names (`u64`, `a sequence`, `struct StepInput`).
pub fn plain_json_message(message: &str) -> String {
    let Some((before, expected)) = message.split_once("expected ") else {
        return message.to_owned();
    };
    let (what, rest) = match expected.find([',', ' ']) {
        Some(end) if expected.starts_with("struct ") || expected.starts_with("a ") => {
            // Two words: `struct X`, `a map`, `a sequence`, `a string`.
            let second_end = expected[end + 1..]
                .find([',', ' '])
                .map_or(expected.len(), |i| end + 1 + i);
            expected.split_at(second_end)
        }
        Some(end) => expected.split_at(end),
        None => (expected, ""),
    };
    let plain = match what {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a map" => "an object",
        "a sequence" => "a list",
        "unit" => "null",
        other if other.starts_with("struct ") => "an object",
        other => other,
    };
    format!("{before}expected {plain}{rest}")
}

/// Why a batch load failed; cloneable, as DataLoader requires.
#[derive(Clone, Debug)]
pub struct LoadError(std::sync::Arc<sea_orm::DbErr>);

impl From<sea_orm::DbErr> for LoadError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self(std::sync::Arc::new(err))
    }
}

impl From<LoadError> for AppError {
    fn from(err: LoadError) -> Self {
        AppError::Internal(anyhow::anyhow!("batch load failed: {}", err.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_messages_speak_of_json_not_of_rust_types() {
        let cases = [
            (
                "invalid type: string \"x\", expected u64 at line 1 column 9",
                "invalid type: string \"x\", expected a whole number, 0 or more at line 1 column 9",
            ),
            (
                "invalid value: integer `-1`, expected u64",
                "invalid value: integer `-1`, expected a whole number, 0 or more",
            ),
            (
                "invalid type: integer `1`, expected a map",
                "invalid type: integer `1`, expected an object",
            ),
            (
                "invalid type: string \"a\", expected a sequence",
                "invalid type: string \"a\", expected a list",
            ),
            (
                "invalid type: null, expected struct StepInput",
                "invalid type: null, expected an object",
            ),
            (
                "invalid type: integer `1`, expected a string",
                "invalid type: integer `1`, expected a string",
            ),
            ("missing field `url`", "missing field `url`"),
        ];
        for (message, plain) in cases {
            assert_eq!(plain_json_message(message), plain);
        }
    }
}
