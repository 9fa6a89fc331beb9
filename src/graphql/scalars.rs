//! FlowPilot's own scalar: `JSON`, any JSON value (RFC 8259). `DateTime`
//! is async-graphql's, an RFC 3339 instant in UTC; its description is set
//! where the schema is built.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// Any JSON value: object, array, string, number, boolean or null.
#[derive(Clone, Debug, PartialEq)]
pub struct Json(pub serde_json::Value);

/// Any JSON value (RFC 8259): an object, array, string, number, boolean or
/// null, written as JSON itself — never as a string holding JSON.
#[Scalar(
    name = "JSON",
    specified_by_url = "https://www.rfc-editor.org/rfc/rfc8259"
)]
impl ScalarType for Json {
    fn parse(value: Value) -> InputValueResult<Self> {
        value
            .into_json()
            .map(Self)
            .map_err(|_| InputValueError::custom("a JSON value"))
    }

    fn to_value(&self) -> Value {
        Value::from_json(self.0.clone()).unwrap_or(Value::Null)
    }
}

/// The description of `DateTime` in the schema.
pub const DATE_TIME_DESCRIPTION: &str = "An instant in time, as an RFC 3339 date-time string. Answers are in UTC (`2026-12-07T09:30:00.123456+00:00`); arguments may carry any offset.";
