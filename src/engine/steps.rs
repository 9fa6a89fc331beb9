//! What each step kind does once its config is rendered.

use std::time::Duration;

use serde_json::{Value, json};

use super::http::HttpSteps;
use crate::workflows::definition::StepConfig;

/// What a step needs besides its config.
pub struct StepContext {
    pub http: HttpSteps,
    /// `{executionId}:{stepId}`: the same for every attempt of the step.
    pub idempotency_key: String,
    /// The step's timeout, when it has one.
    pub timeout: Option<Duration>,
}

/// Whether a step of this config runs in memory at the cost of what it
/// names: it waits on nothing outside, and its templates only look values
/// up (no rendering process, nothing to cancel), so it can start and end in
/// one write.
pub fn runs_in_memory(config: &StepConfig) -> bool {
    matches!(
        config,
        StepConfig::Transform { .. } | StepConfig::Fail { .. } | StepConfig::Condition { .. }
    ) && config.renders_only_lookups()
}

/// Runs a rendered step; `Ok` carries the step's output, `Err` its error.
pub async fn execute(config: StepConfig, context: StepContext) -> Result<Value, String> {
    match config {
        StepConfig::Transform { output } => Ok(output),
        StepConfig::Delay { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Value::Null)
        }
        StepConfig::Fail { message } => Err(message),
        StepConfig::Condition {
            result: Some(result),
            ..
        } => Ok(json!({ "result": result })),
        StepConfig::Condition {
            result: None,
            expression,
        } => Err(format!("the condition `{expression}` was not evaluated")),
        StepConfig::Http(request) => {
            context
                .http
                .send(request, &context.idempotency_key, context.timeout)
                .await
        }
    }
}
