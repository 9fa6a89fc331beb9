//! The workflow definition: a DAG of typed steps, parsed and validated once
//! when a version is created, then stored as JSON and trusted.
//!
//! Validation errors are BAD_USER_INPUT with `extensions.field` pointing
//! into the input, e.g. `definition.steps[2].config.ms`.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::step_configs::{
    ConditionConfig, DelayConfig, FailConfig, HttpStepConfig, TransformConfig, typed,
};
use super::template::{self, Renderer};
use crate::error::{AppError, AppResult};

/// Most steps a definition may hold.
pub const MAX_STEPS: usize = 200;
/// Longest DELAY, in milliseconds (one day).
pub const MAX_DELAY_MS: u64 = 24 * 60 * 60 * 1000;

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepKind {
    /// Builds a JSON value from templates over the input and earlier outputs.
    Transform,
    /// Waits a number of milliseconds.
    Delay,
    /// Fails with a message (for tests and demos).
    Fail,
    /// Evaluates an expression; steps needing it are skipped when false.
    Condition,
    /// Sends an HTTP request and records the response.
    Http,
}

impl StepKind {
    /// Every kind, in the order `stepKinds` lists them.
    pub const ALL: [Self; 5] = [
        Self::Transform,
        Self::Delay,
        Self::Fail,
        Self::Condition,
        Self::Http,
    ];

    /// The kind's name, as stored and in the GraphQL enum.
    pub fn name(self) -> &'static str {
        match self {
            Self::Transform => "TRANSFORM",
            Self::Delay => "DELAY",
            Self::Fail => "FAIL",
            Self::Condition => "CONDITION",
            Self::Http => "HTTP",
        }
    }
}

/// A step's configuration, parsed for its kind. It crosses to a rendering
/// process as JSON (see `engine::rendering`), credentials included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StepConfig {
    /// `{"output": <JSON with templates>}`.
    Transform { output: Value },
    /// `{"ms": <milliseconds>}`.
    Delay { ms: u64 },
    /// `{"message": <template>}`.
    Fail { message: String },
    /// `{"if": <expression>}`; `result` is set once evaluated.
    Condition {
        expression: String,
        result: Option<bool>,
    },
    /// `{"method": "POST", "url": <template>, "headers": {<name>: <template>},
    /// "body": <JSON with templates>}`; only `url` is required.
    Http(HttpConfig),
}

/// An HTTP step's request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpConfig {
    /// GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
    pub method: String,
    pub url: String,
    /// Header names (as given) and values.
    pub headers: Vec<(String, String)>,
    /// A string is sent as text, anything else as JSON.
    pub body: Option<Value>,
}

impl HttpConfig {
    fn parse(config: HttpStepConfig, field: &str) -> AppResult<Self> {
        let bad =
            |key: &str, message: String| AppError::bad_input(format!("{field}.{key}"), message);
        let url = config.url;
        template::check(&url).map_err(|e| bad("url", e))?;
        if !template::has_template(&url) {
            parse_http_url(&url).map_err(|e| bad("url", e))?;
        }
        let mut headers = Vec::new();
        for (name, value) in config.headers.unwrap_or_default() {
            let at = format!("headers.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(bad(&at, format!("`{name}` is not a valid header name")));
            }
            template::check(&value).map_err(|e| bad(&at, e))?;
            headers.push((name, value));
        }
        let body = config.body.filter(|body| !body.is_null());
        if let Some(body) = &body {
            template::check_value(body, &format!("{field}.body"))
                .map_err(|(path, message)| AppError::bad_input(path, message))?;
        }
        Ok(Self {
            method: config.method.as_str().to_owned(),
            url,
            headers,
            body,
        })
    }

    fn render(&self, renderer: &mut Renderer) -> Result<Self, String> {
        let url = render_text(&self.url, renderer)?;
        parse_http_url(&url)?;
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| {
                let value = render_text(value, renderer)?;
                http::HeaderValue::from_str(&value).map_err(|_| {
                    format!("header `{name}` rendered to a value HTTP cannot carry")
                })?;
                Ok((name.clone(), value))
            })
            .collect::<Result<_, String>>()?;
        let body = match &self.body {
            Some(body) => Some(renderer.render_value(body)?),
            None => None,
        };
        Ok(Self {
            method: self.method.clone(),
            url,
            headers,
            body,
        })
    }

    /// The request as JSON; values of headers that carry credentials are
    /// replaced, so step inputs never show them.
    fn to_json(&self) -> Value {
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let value = if is_credential_header(name) {
                    REDACTED.to_owned()
                } else {
                    value.clone()
                };
                (name.clone(), Value::String(value))
            })
            .collect();
        serde_json::json!({
            "method": self.method,
            "url": self.url,
            "headers": headers,
            "body": self.body,
        })
    }
}

/// What a credential header's value is recorded as.
pub const REDACTED: &str = "[redacted]";

/// Whether a header named `name` likely carries a credential.
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || (name != "idempotency-key"
        && ["token", "secret", "key", "password", "auth", "signature"]
            .iter()
            .any(|word| name.contains(word)))
}

/// Parses `url`, which must be absolute http or https.
pub fn parse_http_url(url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}` is not an http or https URL"));
    }
    if parsed.host().is_none() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(parsed)
}

/// Renders a template to text (a sole expression's JSON value is written out).
fn render_text(source: &str, renderer: &mut Renderer) -> Result<String, String> {
    Ok(match renderer.render(source)? {
        Value::String(text) => text,
        other => other.to_string(),
    })
}

impl StepConfig {
    /// Parses and checks `config` for `kind`; `field` is the config's path.
    pub fn parse(kind: StepKind, config: &Value, field: &str) -> AppResult<Self> {
        match kind {
            StepKind::Transform => {
                let config: TransformConfig = typed(kind, config, field)?;
                template::check_value(&config.output, &format!("{field}.output"))
                    .map_err(|(path, message)| AppError::bad_input(path, message))?;
                Ok(Self::Transform {
                    output: config.output,
                })
            }
            StepKind::Delay => {
                let config: DelayConfig = typed(kind, config, field)?;
                if config.ms > MAX_DELAY_MS {
                    return Err(AppError::bad_input(
                        format!("{field}.ms"),
                        format!("`ms` must be a whole number from 0 to {MAX_DELAY_MS}"),
                    ));
                }
                Ok(Self::Delay { ms: config.ms })
            }
            StepKind::Condition => {
                let config: ConditionConfig = typed(kind, config, field)?;
                template::check_expression(&config.condition)
                    .map_err(|e| AppError::bad_input(format!("{field}.if"), e))?;
                Ok(Self::Condition {
                    expression: config.condition,
                    result: None,
                })
            }
            StepKind::Fail => {
                let config: FailConfig = typed(kind, config, field)?;
                template::check(&config.message)
                    .map_err(|e| AppError::bad_input(format!("{field}.message"), e))?;
                Ok(Self::Fail {
                    message: config.message,
                })
            }
            StepKind::Http => HttpConfig::parse(typed(kind, config, field)?, field).map(Self::Http),
        }
    }

    /// This config with every template rendered by `renderer`.
    pub fn render(&self, renderer: &mut Renderer) -> Result<Self, String> {
        Ok(match self {
            Self::Transform { output } => Self::Transform {
                output: renderer.render_value(output)?,
            },
            Self::Delay { ms } => Self::Delay { ms: *ms },
            Self::Condition { expression, .. } => Self::Condition {
                expression: expression.clone(),
                result: Some(renderer.evaluate_condition(expression)?),
            },
            Self::Fail { message } => Self::Fail {
                message: render_text(message, renderer)?,
            },
            Self::Http(config) => Self::Http(config.render(renderer)?),
        })
    }

    /// Every template source in this config.
    pub fn template_sources(&self) -> Vec<&str> {
        fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::String(s) => out.push(s),
                Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
                Value::Object(map) => map.values().for_each(|item| strings(item, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        match self {
            Self::Transform { output } => strings(output, &mut out),
            Self::Delay { .. } => {}
            Self::Fail { message } => out.push(message),
            Self::Condition { expression, .. } => out.push(expression),
            Self::Http(config) => {
                out.push(&config.url);
                out.extend(config.headers.iter().map(|(_, v)| v.as_str()));
                if let Some(body) = &config.body {
                    strings(body, &mut out);
                }
            }
        }
        out
    }

    /// Whether rendering this config only looks values up (see
    /// [`template::only_looks_up`]), so it costs no more than what it names.
    pub fn renders_only_lookups(&self) -> bool {
        match self {
            Self::Transform { output } => template::value_only_looks_up(output),
            Self::Delay { .. } => true,
            Self::Fail { message } => template::only_looks_up(message),
            Self::Condition { expression, .. } => template::is_lookup(expression.trim()),
            Self::Http(config) => {
                template::only_looks_up(&config.url)
                    && config
                        .headers
                        .iter()
                        .all(|(_, v)| template::only_looks_up(v))
                    && config
                        .body
                        .as_ref()
                        .is_none_or(template::value_only_looks_up)
            }
        }
    }

    /// The config as JSON, in its input shape, as a step's input records it
    /// (without credentials).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Transform { output } => serde_json::json!({ "output": output }),
            Self::Delay { ms } => serde_json::json!({ "ms": ms }),
            Self::Fail { message } => serde_json::json!({ "message": message }),
            Self::Condition { expression, .. } => serde_json::json!({ "if": expression }),
            Self::Http(config) => config.to_json(),
        }
    }
}

/// Longest step or execution timeout, in milliseconds (one day and a week).
pub const MAX_STEP_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;
pub const MAX_EXECUTION_TIMEOUT_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Most attempts a retry policy may allow.
pub const MAX_ATTEMPTS: u32 = 20;

/// How a failed step is tried again: up to `max_attempts` attempts in all,
/// waiting `initial_backoff_ms`, then that times `factor` each time, at most
/// `max_backoff_ms`, each wait varied by up to `jitter` (a fraction) either way.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub factor: f64,
    pub max_backoff_ms: u64,
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// One attempt: no retries.
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff_ms: 1000,
            factor: 2.0,
            max_backoff_ms: 60_000,
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// Checks the bounds; `field` is the policy's path.
    pub fn validate(&self, field: &str) -> AppResult<()> {
        let bad = |key: &str, message: String| {
            Err(AppError::bad_input(format!("{field}.{key}"), message))
        };
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return bad(
                "maxAttempts",
                format!("maxAttempts is from 1 to {MAX_ATTEMPTS}"),
            );
        }
        if self.initial_backoff_ms > MAX_STEP_TIMEOUT_MS {
            return bad(
                "initialBackoffMs",
                format!("initialBackoffMs is at most {MAX_STEP_TIMEOUT_MS}"),
            );
        }
        if !(1.0..=10.0).contains(&self.factor) {
            return bad("factor", "factor is from 1 to 10".to_owned());
        }
        if self.max_backoff_ms < self.initial_backoff_ms
            || self.max_backoff_ms > MAX_STEP_TIMEOUT_MS
        {
            return bad(
                "maxBackoffMs",
                format!("maxBackoffMs is from initialBackoffMs to {MAX_STEP_TIMEOUT_MS}"),
            );
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad("jitter", "jitter is a fraction from 0 to 1".to_owned());
        }
        Ok(())
    }

    /// The wait before the next attempt, after `failures` failed attempts
    /// (1 or more); `spread` in [-1, 1] picks the jitter.
    pub fn backoff(&self, failures: u32, spread: f64) -> std::time::Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let base = (self.initial_backoff_ms as f64 * self.factor.powi(exponent))
            .min(self.max_backoff_ms as f64);
        let jittered = base * (1.0 + self.jitter * spread.clamp(-1.0, 1.0));
        std::time::Duration::from_millis(jittered.max(0.0) as u64)
    }
}

/// One step as stored: its config is kept as given, already validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDefinition {
    pub id: String,
    pub kind: StepKind,
    #[serde(default)]
    pub needs: Vec<String>,
    pub config: Value,
    /// Retries after a failed attempt (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// How long one attempt may run.
    #[serde(default, rename = "timeoutMs", skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl StepDefinition {
    /// The retry policy in force: the step's, or a single attempt.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry.unwrap_or_default()
    }
}

impl StepDefinition {
    /// The parsed config (valid for stored definitions).
    pub fn parsed_config(&self) -> AppResult<StepConfig> {
        StepConfig::parse(self.kind, &self.config, "config")
    }
}

/// A validated DAG of steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDefinition {
    pub steps: Vec<StepDefinition>,
    /// How long an execution may take from its first start.
    #[serde(default, rename = "timeoutMs", skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Whether `id` is a valid step id: `^[a-z][a-z0-9_]{0,63}$`.
pub fn is_valid_step_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some('a'..='z'))
        && id.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// One thing wrong with a definition: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// A path into the input, e.g. `definition.steps[2].config.ms`.
    pub field: String,
    pub message: String,
}

impl Problem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    fn from_error(error: AppError, field: &str) -> Self {
        match error {
            AppError::BadUserInput { field, message } => Self { field, message },
            other => Self::new(field, format!("{other:?}")),
        }
    }
}

impl From<Problem> for AppError {
    fn from(problem: Problem) -> Self {
        AppError::bad_input(problem.field, problem.message)
    }
}

impl WorkflowDefinition {
    /// Validates steps given by a client; the first problem is
    /// BAD_USER_INPUT. `field` is the definition's path in the input
    /// (`definition`).
    pub fn parse(
        steps: Vec<StepDefinition>,
        timeout_ms: Option<u64>,
        field: &str,
    ) -> AppResult<Self> {
        Self::validate(steps, timeout_ms, field).map_err(|problems| {
            problems
                .into_iter()
                .next()
                .map(AppError::from)
                .unwrap_or_else(|| AppError::bad_input(field, "the definition is not valid"))
        })
    }

    /// Validates steps given by a client, finding every problem: each
    /// step's id, config, retry policy and timeout, each `needs` entry,
    /// and, once every step and need is sound, cycles.
    pub fn validate(
        steps: Vec<StepDefinition>,
        timeout_ms: Option<u64>,
        field: &str,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        if let Some(ms) = timeout_ms
            && !(1..=MAX_EXECUTION_TIMEOUT_MS).contains(&ms)
        {
            problems.push(Problem::new(
                format!("{field}.timeoutMs"),
                format!("timeoutMs is from 1 to {MAX_EXECUTION_TIMEOUT_MS}"),
            ));
        }
        if steps.is_empty() {
            problems.push(Problem::new(
                format!("{field}.steps"),
                "a workflow needs at least one step",
            ));
            return Err(problems);
        }
        if steps.len() > MAX_STEPS {
            // Checking every step of a huge definition is work nobody asked for.
            problems.push(Problem::new(
                format!("{field}.steps"),
                format!("a workflow may have at most {MAX_STEPS} steps"),
            ));
            return Err(problems);
        }
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut ids_sound = true;
        for (i, step) in steps.iter().enumerate() {
            let at = format!("{field}.steps[{i}]");
            if !is_valid_step_id(&step.id) {
                ids_sound = false;
                problems.push(Problem::new(
                    format!("{at}.id"),
                    "step ids start with a lower-case letter, then up to 63 lower-case letters, digits or underscores",
                ));
            } else if index.insert(step.id.as_str(), i).is_some() {
                ids_sound = false;
                problems.push(Problem::new(
                    format!("{at}.id"),
                    format!("step id `{}` is used twice", step.id),
                ));
            }
            let config_at = format!("{at}.config");
            if let Err(error) = StepConfig::parse(step.kind, &step.config, &config_at) {
                problems.push(Problem::from_error(error, &config_at));
            }
            if let Some(policy) = &step.retry
                && let Err(error) = policy.validate(&format!("{at}.retry"))
            {
                problems.push(Problem::from_error(error, &at));
            }
            if let Some(ms) = step.timeout_ms
                && !(1..=MAX_STEP_TIMEOUT_MS).contains(&ms)
            {
                problems.push(Problem::new(
                    format!("{at}.timeoutMs"),
                    format!("timeoutMs is from 1 to {MAX_STEP_TIMEOUT_MS}"),
                ));
            }
        }
        let mut needs_sound = ids_sound;
        for (i, step) in steps.iter().enumerate() {
            let mut seen = HashSet::new();
            for (j, need) in step.needs.iter().enumerate() {
                let at = format!("{field}.steps[{i}].needs[{j}]");
                let problem = if need == &step.id {
                    Some(format!("step `{}` cannot need itself", step.id))
                } else if !steps.iter().any(|other| &other.id == need) {
                    Some(format!("unknown step `{need}`"))
                } else if !seen.insert(need) {
                    Some(format!("`{need}` is listed twice"))
                } else {
                    None
                };
                if let Some(message) = problem {
                    needs_sound = false;
                    problems.push(Problem::new(at, message));
                }
            }
        }
        let definition = Self { steps, timeout_ms };
        if needs_sound && let Some(i) = definition.first_step_in_cycle() {
            let id = &definition.steps[i].id;
            problems.push(Problem::new(
                format!("{field}.steps[{i}].needs"),
                format!("step `{id}` is part of a dependency cycle"),
            ));
        }
        if problems.is_empty() {
            Ok(definition)
        } else {
            Err(problems)
        }
    }

    /// Reads a stored definition (validated when it was stored).
    pub fn from_stored(value: &Value) -> anyhow::Result<Self> {
        Ok(serde_json::from_value(value.clone())?)
    }

    /// The definition as stored.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// The step with `id`.
    pub fn step(&self, id: &str) -> Option<&StepDefinition> {
        self.steps.iter().find(|step| step.id == id)
    }

    /// Steps no other step needs, in definition order.
    pub fn sinks(&self) -> Vec<&StepDefinition> {
        let needed: HashSet<&str> = self
            .steps
            .iter()
            .flat_map(|s| s.needs.iter().map(String::as_str))
            .collect();
        self.steps
            .iter()
            .filter(|s| !needed.contains(s.id.as_str()))
            .collect()
    }

    /// Kahn's algorithm: the index of a step left over when no more steps
    /// can be ordered, i.e. one on or behind a cycle.
    fn first_step_in_cycle(&self) -> Option<usize> {
        let position: HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let mut waiting_on: Vec<usize> = self.steps.iter().map(|s| s.needs.len()).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            for need in &step.needs {
                dependents[position[need.as_str()]].push(i);
            }
        }
        let mut ready: Vec<usize> = (0..self.steps.len())
            .filter(|i| waiting_on[*i] == 0)
            .collect();
        let mut ordered = 0;
        while let Some(i) = ready.pop() {
            ordered += 1;
            for &dependent in &dependents[i] {
                waiting_on[dependent] -= 1;
                if waiting_on[dependent] == 0 {
                    ready.push(dependent);
                }
            }
        }
        if ordered == self.steps.len() {
            None
        } else {
            (0..self.steps.len()).find(|i| waiting_on[*i] > 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn step(id: &str, kind: StepKind, needs: &[&str], config: Value) -> StepDefinition {
        StepDefinition {
            id: id.into(),
            kind,
            needs: needs.iter().map(|s| s.to_string()).collect(),
            config,
            retry: None,
            timeout_ms: None,
        }
    }

    fn field_of(result: AppResult<WorkflowDefinition>) -> String {
        match result {
            Err(AppError::BadUserInput { field, .. }) => field,
            other => panic!("expected bad input, got {other:?}"),
        }
    }

    #[test]
    fn step_ids_follow_the_pattern() {
        assert!(is_valid_step_id("a"));
        assert!(is_valid_step_id("fetch_user_2"));
        assert!(is_valid_step_id(&format!("a{}", "b".repeat(63))));
        for bad in ["", "1a", "_a", "A", "a-b", "a b", "é"] {
            assert!(!is_valid_step_id(bad), "{bad:?}");
        }
        assert!(!is_valid_step_id(&format!("a{}", "b".repeat(64))));
    }

    #[test]
    fn a_cycle_is_reported_on_a_step_in_it() {
        let steps = vec![
            step("start", StepKind::Delay, &[], json!({ "ms": 0 })),
            step("a", StepKind::Delay, &["start", "b"], json!({ "ms": 0 })),
            step("b", StepKind::Delay, &["a"], json!({ "ms": 0 })),
        ];
        assert_eq!(
            field_of(WorkflowDefinition::parse(steps, None, "definition")),
            "definition.steps[1].needs"
        );
    }

    #[test]
    fn unknown_config_keys_are_reported_by_key() {
        let steps = vec![step(
            "a",
            StepKind::Delay,
            &[],
            json!({ "ms": 5, "seconds": 1 }),
        )];
        assert_eq!(
            field_of(WorkflowDefinition::parse(steps, None, "definition")),
            "definition.steps[0].config.seconds"
        );
    }

    #[test]
    fn validation_reports_every_problem_in_input_order() {
        let steps = vec![
            step("Bad", StepKind::Delay, &[], json!({ "ms": "soon" })),
            step("b", StepKind::Fail, &["missing"], json!({})),
            step("b", StepKind::Transform, &["b"], json!({ "output": 1 })),
        ];
        let problems = WorkflowDefinition::validate(steps, Some(0), "definition").unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "definition.timeoutMs",
                "definition.steps[0].id",
                "definition.steps[0].config.ms",
                "definition.steps[1].config.message",
                "definition.steps[2].id",
                "definition.steps[1].needs[0]",
                "definition.steps[2].needs[0]",
            ]
        );
    }

    #[test]
    fn more_than_200_steps_is_a_problem() {
        let steps: Vec<StepDefinition> = (0..=MAX_STEPS)
            .map(|n| step(&format!("s{n}"), StepKind::Delay, &[], json!({ "ms": 0 })))
            .collect();
        let problems = WorkflowDefinition::validate(steps, None, "definition").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "definition.steps");
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_the_maximum() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 100,
            factor: 3.0,
            max_backoff_ms: 1000,
            jitter: 0.5,
        };
        let ms = |failures, spread| policy.backoff(failures, spread).as_millis();
        assert_eq!(
            [ms(1, 0.0), ms(2, 0.0), ms(3, 0.0), ms(4, 0.0)],
            [100, 300, 900, 1000]
        );
        assert_eq!(
            (ms(1, -1.0), ms(1, 1.0)),
            (50, 150),
            "jitter varies the wait by up to half"
        );
    }

    #[test]
    fn retry_policies_out_of_bounds_are_reported_by_key() {
        let mut step = step("a", StepKind::Delay, &[], json!({ "ms": 0 }));
        step.retry = Some(RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        });
        assert_eq!(
            field_of(WorkflowDefinition::parse(vec![step], None, "definition")),
            "definition.steps[0].retry.maxAttempts"
        );
    }

    #[test]
    fn sinks_are_the_steps_nothing_needs() {
        let steps = vec![
            step("a", StepKind::Delay, &[], json!({ "ms": 0 })),
            step("b", StepKind::Delay, &["a"], json!({ "ms": 0 })),
            step("c", StepKind::Delay, &["a"], json!({ "ms": 0 })),
        ];
        let definition = WorkflowDefinition::parse(steps, None, "definition").unwrap();
        let sinks: Vec<&str> = definition.sinks().iter().map(|s| s.id.as_str()).collect();
        assert_eq!(sinks, ["b", "c"]);
    }

    #[test]
    fn a_stored_definition_reads_back_the_same() {
        let steps = vec![step(
            "a",
            StepKind::Transform,
            &[],
            json!({ "output": "{{ input.n }}" }),
        )];
        let definition = WorkflowDefinition::parse(steps, None, "definition").unwrap();
        assert_eq!(
            WorkflowDefinition::from_stored(&definition.to_json()).unwrap(),
            definition
        );
    }
}
