//! The config of each step kind as a Rust type. The parser deserializes a
//! step's `config` into these types, and `stepKinds` publishes the JSON
//! Schema derived from them, so editors validate against exactly what the
//! server accepts. Checks a schema cannot state (templates compile, URLs
//! parse, header names are valid) follow in `definition`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::{JsonSchema, schema_for};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::definition::StepKind;
use crate::error::{AppError, AppResult, plain_json_message};

/// Builds a JSON value from templates over `input` and
/// `steps.<id>.output`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// Any JSON; every string in it is a template, and a string that is
    /// exactly one `{{ expression }}` yields the expression's typed value.
    pub output: Value,
}

/// Waits a number of milliseconds.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelayConfig {
    /// Milliseconds to wait, at most one day.
    #[schemars(range(max = 86_400_000))]
    pub ms: u64,
}

/// Fails with a message (for tests and demos).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailConfig {
    /// The error, a template.
    pub message: String,
}

/// Evaluates an expression; steps needing this one are skipped when it is
/// false.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// An expression over `input` and `steps.<id>.output`, without braces.
    #[serde(rename = "if")]
    pub condition: String,
}

/// An HTTP method an HTTP step may use.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    #[serde(alias = "get")]
    Get,
    #[serde(alias = "post")]
    Post,
    #[serde(alias = "put")]
    Put,
    #[serde(alias = "patch")]
    Patch,
    #[serde(alias = "delete")]
    Delete,
    #[serde(alias = "head")]
    Head,
    #[serde(alias = "options")]
    Options,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Head => "HEAD",
            Self::Options => "OPTIONS",
        }
    }
}

/// Sends an HTTP request and records the response. Addresses that are not
/// public are refused unless the server allows them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpStepConfig {
    /// GET when left out.
    #[serde(default)]
    pub method: HttpMethod,
    /// An absolute http or https URL; a template.
    pub url: String,
    /// Header names and values; values are templates.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Sent as text when a string, as JSON otherwise; strings are templates.
    #[serde(default)]
    pub body: Option<Value>,
}

/// The JSON Schema of `kind`'s config, derived once.
pub fn config_schema(kind: StepKind) -> &'static Value {
    static SCHEMAS: OnceLock<[Value; StepKind::ALL.len()]> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| StepKind::ALL.map(derive_schema));
    let index = StepKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default();
    &schemas[index]
}

fn derive_schema(kind: StepKind) -> Value {
    let mut schema = match kind {
        StepKind::Transform => schema_for!(TransformConfig),
        StepKind::Delay => schema_for!(DelayConfig),
        StepKind::Fail => schema_for!(FailConfig),
        StepKind::Condition => schema_for!(ConditionConfig),
        StepKind::Http => schema_for!(HttpStepConfig),
    }
    .to_value();
    drop_nonstandard_formats(&mut schema);
    schema
}

/// The `format`s JSON Schema (2020-12) defines; validators in strict mode
/// refuse others, such as the `uint64` the derivation writes for an
/// unsigned number (whose `minimum: 0` already says it).
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

fn drop_nonstandard_formats(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let nonstandard = map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|format| !STANDARD_FORMATS.contains(&format));
            if nonstandard {
                map.remove("format");
            }
            map.values_mut().for_each(drop_nonstandard_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nonstandard_formats),
        _ => {}
    }
}

/// The description of `kind`, from its config type's documentation.
pub fn description(kind: StepKind) -> &'static str {
    config_schema(kind)
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Deserializes `config` (at `field`) into `kind`'s type. Unknown and
/// missing keys are reported by key, type errors at their path.
pub fn typed<T: DeserializeOwned>(kind: StepKind, config: &Value, field: &str) -> AppResult<T> {
    let Value::Object(map) = config else {
        return Err(AppError::bad_input(field, "config must be a JSON object"));
    };
    let schema = config_schema(kind);
    let allowed: Vec<&str> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| properties.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if let Some(unknown) = map.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(AppError::bad_input(
            format!("{field}.{unknown}"),
            format!(
                "unknown config key `{unknown}` for a {} step (allowed: {})",
                kind.name(),
                allowed.join(", ")
            ),
        ));
    }
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    for key in required {
        if !map.contains_key(key) {
            return Err(AppError::bad_input(
                format!("{field}.{key}"),
                format!("a {} step needs `{key}`", kind.name()),
            ));
        }
    }
    serde_path_to_error::deserialize(config).map_err(|error| {
        let path = error.path().to_string();
        let at = if path == "." {
            field.to_owned()
        } else {
            format!("{field}.{path}")
        };
        AppError::bad_input(at, plain_json_message(&error.into_inner().to_string()))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::workflows::definition::MAX_DELAY_MS;

    #[test]
    fn every_kind_publishes_an_object_schema_with_a_description() {
        for kind in StepKind::ALL {
            let schema = config_schema(kind);
            assert_eq!(schema["type"], "object", "{kind:?}");
            assert!(!description(kind).is_empty(), "{kind:?}");
        }
        assert_eq!(config_schema(StepKind::Http)["required"], json!(["url"]));
        assert_eq!(
            config_schema(StepKind::Delay)["properties"]["ms"]["maximum"],
            json!(MAX_DELAY_MS)
        );
    }

    #[test]
    fn published_schemas_use_only_standard_formats() {
        fn formats(value: &Value, found: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(format)) = map.get("format") {
                        found.push(format.clone());
                    }
                    map.values().for_each(|v| formats(v, found));
                }
                Value::Array(items) => items.iter().for_each(|v| formats(v, found)),
                _ => {}
            }
        }
        for kind in StepKind::ALL {
            let mut found = Vec::new();
            formats(config_schema(kind), &mut found);
            assert!(
                found.iter().all(|f| STANDARD_FORMATS.contains(&f.as_str())),
                "{kind:?}: {found:?}"
            );
        }
        assert_eq!(
            config_schema(StepKind::Delay)["properties"]["ms"]["minimum"],
            json!(0)
        );
    }

    #[test]
    fn a_config_of_the_wrong_type_is_described_in_json_terms() {
        let error =
            typed::<DelayConfig>(StepKind::Delay, &json!({ "ms": "soon" }), "config").unwrap_err();
        match error {
            AppError::BadUserInput { field, message } => {
                assert_eq!(field, "config.ms");
                assert!(
                    message.contains("expected a whole number, 0 or more"),
                    "{message}"
                );
                assert!(!message.contains("u64"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn type_errors_are_reported_at_their_path() {
        let error = typed::<HttpStepConfig>(
            StepKind::Http,
            &json!({ "url": "https://example.com", "headers": { "x-a": 1 } }),
            "config",
        )
        .unwrap_err();
        match error {
            AppError::BadUserInput { field, .. } => assert_eq!(field, "config.headers.x-a"),
            other => panic!("{other:?}"),
        }
    }
}
