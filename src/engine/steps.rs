//! What each step kind does once its config is rendered.

use serde_json::{Value, json};

use crate::workflows::definition::StepConfig;

/// Runs a rendered step; `Ok` carries the step's output, `Err` its error.
pub async fn execute(config: StepConfig) -> Result<Value, String> {
    match config {
        StepConfig::Transform { output } => Ok(output),
        StepConfig::Delay { ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
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
    }
}
