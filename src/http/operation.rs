//! One operation as the streaming transports receive it: the `payload` of
//! a WebSocket `subscribe` (or legacy `start`) and the body of a
//! graphql-sse request share this shape.

use async_graphql::{Request, Variables};
use serde::Deserialize;

use crate::graphql::persisted::set_extensions;

/// `query`, `operationName`, `variables` and `extensions`, as sent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub operation_name: Option<String>,
    #[serde(default)]
    pub variables: Option<serde_json::Value>,
    #[serde(default)]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Operation {
    /// The request to run, its extensions (where a persisted query's hash
    /// travels) included.
    pub fn into_request(self) -> Request {
        let mut request = Request::new(self.query);
        if let Some(name) = self.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = self.variables {
            request = request.variables(Variables::from_json(variables));
        }
        set_extensions(&mut request, self.extensions);
        request
    }
}
