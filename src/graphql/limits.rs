//! Refusals and responses held to the document limits.
//!
//! Every refusal of a document keeps `extensions.code: BAD_USER_INPUT` and
//! adds `extensions.reason` (`PARSE_FAILED`, `VALIDATION_FAILED`,
//! `LIMIT_EXCEEDED`) and, for a limit, `extensions.limit` naming it.
//! [`finish_response`] bounds what goes back on every transport: the number
//! of errors, the length of each message and the size of the whole
//! response. What is measured before a document runs lives in
//! `document_guard`.

use async_graphql::{ErrorExtensionValues, Pos, Response, ServerError, Value};

use crate::engine::storable::json_len;
use crate::limits::DocumentLimits;

/// `extensions.reason` of a document that does not parse.
pub const PARSE_FAILED: &str = "PARSE_FAILED";
/// `extensions.reason` of a document that breaks the schema's rules.
pub const VALIDATION_FAILED: &str = "VALIDATION_FAILED";
/// `extensions.reason` of a document or response over a limit.
pub const LIMIT_EXCEEDED: &str = "LIMIT_EXCEEDED";
/// `extensions.reason` of a body or URL that is not a GraphQL request.
pub const INVALID_REQUEST: &str = "INVALID_REQUEST";

/// Longest error message sent, in characters: errors never echo large
/// input back.
pub(super) const MAX_MESSAGE_CHARS: usize = 300;

/// A refusal of the client's request, coded BAD_USER_INPUT.
pub fn refusal(message: impl Into<String>, reason: &str, pos: Option<Pos>) -> ServerError {
    let mut error = ServerError::new(message, pos);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", "BAD_USER_INPUT");
    extensions.set("reason", reason);
    error.extensions = Some(extensions);
    error
}

/// A refusal for going over the limit named `limit`.
pub fn limit_exceeded(limit: &str, message: impl Into<String>) -> ServerError {
    let mut error = refusal(message, LIMIT_EXCEEDED, None);
    if let Some(extensions) = error.extensions.as_mut() {
        extensions.set("limit", limit);
    }
    error
}

/// `text` cut to `max` characters, with an ellipsis when it was cut.
pub(super) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().nth(max).is_none() {
        return text.to_owned();
    }
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Gives every error raised before resolvers ran a code (they are all the
/// client's to fix), keeps at most the limit's number of errors (the rest
/// summed up in one more), shortens long messages, and replaces a response
/// larger than the limit with one error saying so.
pub fn finish_response(mut response: Response, limits: &DocumentLimits) -> Response {
    let max_errors = limits.max_response_errors.max(1);
    if response.errors.len() > max_errors {
        let dropped = response.errors.len() - (max_errors - 1);
        response.errors.truncate(max_errors - 1);
        response.errors.push(limit_exceeded(
            "errors",
            format!("{dropped} more errors were left out"),
        ));
    }
    for error in &mut response.errors {
        if error.message.chars().count() > MAX_MESSAGE_CHARS {
            error.message = truncate_chars(&error.message, MAX_MESSAGE_CHARS);
        }
        let pathless = error.path.is_empty();
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "BAD_USER_INPUT");
            // Not tied to a field: the request was refused before it ran
            // (an unknown operation name, variables that do not fit).
            if pathless && extensions.get("reason").is_none() {
                extensions.set("reason", VALIDATION_FAILED);
            }
        }
    }
    if json_len(&response) > limits.max_response_bytes {
        return Response::from_errors(vec![limit_exceeded(
            "responseBytes",
            format!(
                "the result was larger than {} bytes and was not sent; the operation ran (a mutation took effect): select fewer fields to read it",
                limits.max_response_bytes
            ),
        )]);
    }
    response
}

/// Whether `response` answers a request that never ran: no data, and
/// only errors tied to no field (a document that does not parse or
/// validate, variables that do not fit, a refused persisted query). A
/// response over the size limit ran, and is not one.
pub fn is_request_error(response: &Response) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| {
            error.path.is_empty()
                && !error
                    .extensions
                    .as_ref()
                    .and_then(|extensions| extensions.get("limit"))
                    .is_some_and(|limit| *limit == Value::from("responseBytes"))
        })
}

#[cfg(test)]
pub(super) mod tests {
    use clap::Parser;

    use super::*;

    pub(in crate::graphql) fn limits() -> DocumentLimits {
        crate::config::Settings::parse_from(["flowpilot"]).documents
    }

    pub(in crate::graphql) fn reason_and_limit(error: &ServerError) -> (String, Option<String>) {
        let extensions = error.extensions.as_ref().unwrap();
        let text = |name: &str| match extensions.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        (text("reason").unwrap(), text("limit"))
    }

    #[test]
    fn responses_keep_at_most_the_limit_of_errors_and_short_messages() {
        let errors = (0..500)
            .map(|i| ServerError::new(format!("{i}: {}", "x".repeat(10_000)), None))
            .collect();
        let finished = finish_response(Response::from_errors(errors), &limits());
        assert_eq!(finished.errors.len(), 50);
        assert!(
            finished
                .errors
                .iter()
                .all(|e| e.message.chars().count() <= 301)
        );
        assert_eq!(finished.errors[49].message, "451 more errors were left out");
    }

    #[test]
    fn a_response_over_the_size_limit_becomes_one_error() {
        let mut limits = limits();
        limits.max_response_bytes = 1_000;
        let big = Response::new(Value::String("x".repeat(2_000)));
        let finished = finish_response(big, &limits);
        assert_eq!(finished.data, Value::Null);
        assert_eq!(
            reason_and_limit(&finished.errors[0]).1.as_deref(),
            Some("responseBytes")
        );
    }
}
