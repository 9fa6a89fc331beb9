//! Renders step configs, bounded in CPU and memory, where the step's
//! timeout, the execution's timeout and a cancel reach them.
//!
//! A config whose templates only look values up (`{{ input.x }}`) costs no
//! more than what it names and renders in place. Any other template runs
//! in a rendering process of its own (`flowpilot render-worker`, kept and
//! reused, one per core at most): it runs on fuel into a bounded writer (see
//! `workflows::template`), and the process's address space is capped
//! (`FLOWPILOT_TEMPLATE_MEMORY_BYTES`), because one template operation
//! (a string repeated or concatenated) can allocate before any writer sees
//! it. A rendering that is abandoned — its attempt timed out or was
//! cancelled — kills its process; one that fails recycles it, so a process
//! that came close to its cap is not reused.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Semaphore;

use crate::limits::StepLimits;
use crate::workflows::definition::StepConfig;
use crate::workflows::template::Renderer;

/// The engine's renderer of step configs.
#[derive(Clone)]
pub struct Rendering {
    permits: Arc<Semaphore>,
    idle: Arc<Mutex<Vec<RenderProcess>>>,
    program: Option<PathBuf>,
    fuel: u64,
    max_bytes: usize,
    memory_bytes: usize,
}

/// What a rendering process is asked.
#[derive(Serialize, Deserialize)]
struct RenderRequest<C, V> {
    config: C,
    context: V,
    fuel: u64,
    max_bytes: usize,
}

/// What a rendering process answers.
#[derive(Serialize, Deserialize)]
enum RenderAnswer {
    Rendered(StepConfig),
    Failed(String),
}

impl Rendering {
    /// Renders with the limits' fuel, byte budget and memory cap, at most
    /// one rendering process per core at once.
    pub fn new(limits: &StepLimits) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(cores)),
            idle: Arc::default(),
            program: limits.render_program.clone(),
            fuel: limits.template_fuel,
            max_bytes: limits.max_step_output_bytes,
            memory_bytes: limits.template_memory_bytes,
        }
    }

    /// `config` with its templates rendered against `context`.
    pub async fn render(
        &self,
        config: StepConfig,
        context: Arc<Value>,
    ) -> Result<StepConfig, String> {
        if config.renders_only_lookups() {
            return config.render(&mut Renderer::new(&context, self.fuel, self.max_bytes));
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "the engine is stopping".to_owned())?;
        let request = RenderRequest {
            config: &config,
            context: &*context,
            fuel: self.fuel,
            max_bytes: self.max_bytes,
        };
        let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut process = match self.take_idle() {
            Some(process) => process,
            None => RenderProcess::spawn(self.program.as_ref(), self.memory_bytes)
                .map_err(|e| format!("the template renderer could not start: {e}"))?,
        };
        // A rendered config is at most the budget plus the config itself.
        let most = (self.max_bytes as u64 + line.len() as u64) * 2 + 4096;
        match process.exchange(&line, most).await {
            Some(RenderAnswer::Rendered(config)) => {
                self.give_back(process);
                Ok(config)
            }
            Some(RenderAnswer::Failed(message)) => Err(message),
            None => Err(format!(
                "the template renderer stopped: the templates needed more than {} bytes of memory (FLOWPILOT_TEMPLATE_MEMORY_BYTES)",
                self.memory_bytes
            )),
        }
    }

    fn take_idle(&self) -> Option<RenderProcess> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, process: RenderProcess) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(process);
        }
    }
}

/// One rendering process; killed when dropped.
struct RenderProcess {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl RenderProcess {
    fn spawn(program: Option<&PathBuf>, memory_bytes: usize) -> std::io::Result<Self> {
        let program = match program {
            Some(program) => program.clone(),
            None => std::env::current_exe()?,
        };
        let mut child = tokio::process::Command::new(program)
            .arg("render-worker")
            // It needs nothing of this process's environment (secrets
            // included) but its memory cap.
            .env_clear()
            .env("FLOWPILOT_TEMPLATE_MEMORY_BYTES", memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the renderer has no pipes"));
        };
        Ok(Self {
            _child: child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// Sends one request line and reads one answer line of at most `most`
    /// bytes; `None` when the process died or answered nonsense.
    async fn exchange(&mut self, request: &[u8], most: u64) -> Option<RenderAnswer> {
        self.stdin.write_all(request).await.ok()?;
        self.stdin.flush().await.ok()?;
        let mut answer = String::new();
        let read = (&mut self.stdout)
            .take(most)
            .read_line(&mut answer)
            .await
            .ok()?;
        if read == 0 {
            return None;
        }
        serde_json::from_str(&answer).ok()
    }
}

/// `flowpilot render-worker`: caps this process's memory, then renders
/// each request line from stdin into one answer line on stdout until stdin
/// closes.
pub fn serve_render_requests(limits: &StepLimits) -> ExitCode {
    cap_memory(limits.template_memory_bytes);
    let mut stdout = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            return ExitCode::FAILURE;
        };
        let answer = match serde_json::from_str::<RenderRequest<StepConfig, Value>>(&line) {
            Ok(request) => {
                let mut renderer = Renderer::new(&request.context, request.fuel, request.max_bytes);
                match request.config.render(&mut renderer) {
                    Ok(config) => RenderAnswer::Rendered(config),
                    Err(message) => RenderAnswer::Failed(message),
                }
            }
            Err(err) => RenderAnswer::Failed(format!("the render request was not readable: {err}")),
        };
        let written = serde_json::to_writer(&mut stdout, &answer)
            .map_err(std::io::Error::other)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Caps this process's address space at what it maps now plus `extra`
/// bytes, so an allocation past it fails (and the process ends) instead of
/// taking the machine's memory. Linux only; elsewhere, fuel and the byte
/// budget still bound a rendering.
fn cap_memory(extra: usize) {
    let Some(mapped) = mapped_bytes() else {
        return;
    };
    let cap = (mapped + extra) as libc::rlim_t;
    let limit = libc::rlimit {
        rlim_cur: cap,
        rlim_max: cap,
    };
    // SAFETY: setrlimit reads the struct we pass and changes only this
    // process's limit.
    unsafe {
        libc::setrlimit(libc::RLIMIT_AS, &limit);
    }
}

/// The process's mapped address space (`VmSize`) in bytes.
fn mapped_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
