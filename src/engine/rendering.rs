//! Renders step configs off the async runtime, a bounded number at once.
//!
//! A template runs on fuel and into a bounded writer (see
//! `workflows::template`), so one rendering ends on its own; it runs on the
//! blocking pool so that the worker awaiting it stays responsive — the
//! step's timeout, the execution's timeout and a cancel reach the attempt
//! while it renders. At most one rendering per CPU core runs at once; the
//! permit is held until the rendering really ends, even when the attempt
//! that asked for it was abandoned.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::limits::StepLimits;
use crate::workflows::definition::StepConfig;
use crate::workflows::template::Renderer;

/// The engine's renderer of step configs.
#[derive(Clone)]
pub struct Rendering {
    permits: Arc<Semaphore>,
    fuel: u64,
    max_bytes: usize,
}

impl Rendering {
    /// Renders with the limits' fuel and byte budget, one per core at once.
    pub fn new(limits: &StepLimits) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(cores)),
            fuel: limits.template_fuel,
            max_bytes: limits.max_step_output_bytes,
        }
    }

    /// `config` with its templates rendered against `context`.
    pub async fn render(
        &self,
        config: StepConfig,
        context: Arc<Value>,
    ) -> Result<StepConfig, String> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the engine is stopping".to_owned())?;
        let (fuel, max_bytes) = (self.fuel, self.max_bytes);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            config.render(&mut Renderer::new(&context, fuel, max_bytes))
        })
        .await
        .map_err(|err| format!("rendering crashed: {err}"))?
    }
}
