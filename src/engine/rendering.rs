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
//! cancelled — kills its process; one that fails is not reused, and a
//! process whose peak memory passed half its cap retires after answering.
//! A rendering process is sent only the earlier steps' outputs its
//! templates name (all of them when a template reads `steps` otherwise).

use std::collections::{BTreeMap, HashSet};
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

/// The template context as sent: whole, or with only the steps named.
#[derive(Serialize)]
#[serde(untagged)]
enum ContextView<'a> {
    Whole(&'a Value),
    Named {
        input: &'a Value,
        steps: BTreeMap<&'a str, &'a Value>,
    },
}

impl<'a> ContextView<'a> {
    /// The part of `context` (`{"input", "steps"}`) that `config` can read.
    fn of(config: &StepConfig, context: &'a Value) -> Self {
        let mut named = HashSet::new();
        let all = !config
            .template_sources()
            .into_iter()
            .all(|source| crate::workflows::template::named_steps(source, &mut named));
        let (Some(input), Some(Value::Object(steps))) =
            (context.get("input"), context.get("steps"))
        else {
            return Self::Whole(context);
        };
        if all {
            return Self::Whole(context);
        }
        let steps = steps
            .iter()
            .filter(|(id, _)| named.contains(id.as_str()))
            .map(|(id, step)| (id.as_str(), step))
            .collect();
        Self::Named { input, steps }
    }
}

/// How an exchange with a rendering process ended.
enum Exchange {
    Answered(RenderAnswer),
    /// The process ended (or closed its output) before answering.
    Died,
    /// The answer was longer than the rendered config can be.
    TooLong,
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
            context: ContextView::of(&config, &context),
            fuel: self.fuel,
            max_bytes: self.max_bytes,
        };
        let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        // The rendered config is the config with at most the byte budget
        // rendered into it; JSON may spell one rendered byte in six.
        let most = (6 * self.max_bytes + line.len() + 4096) as u64;
        // An idle process may have retired or died since its last answer:
        // then a new one is asked.
        let (mut process, reused) = match self.take_idle() {
            Some(process) => (process, true),
            None => (self.spawn()?, false),
        };
        let mut exchanged = process.exchange(&line, most).await;
        if reused && matches!(exchanged, Exchange::Died) {
            process = self.spawn()?;
            exchanged = process.exchange(&line, most).await;
        }
        match exchanged {
            Exchange::Answered(RenderAnswer::Rendered(config)) => {
                self.give_back(process);
                Ok(config)
            }
            Exchange::Answered(RenderAnswer::Failed(message)) => Err(message),
            Exchange::TooLong => Err(format!(
                "the templates rendered more than {} bytes (FLOWPILOT_MAX_STEP_OUTPUT_BYTES)",
                self.max_bytes
            )),
            Exchange::Died => Err(process.death().await),
        }
    }

    fn spawn(&self) -> Result<RenderProcess, String> {
        RenderProcess::spawn(self.program.as_ref(), self.memory_bytes)
            .map_err(|e| format!("the template renderer could not start: {e}"))
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
    child: Child,
    memory_bytes: usize,
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
            child,
            memory_bytes,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// Sends one request line and reads one answer line of at most `most`
    /// bytes.
    async fn exchange(&mut self, request: &[u8], most: u64) -> Exchange {
        let sent = async {
            self.stdin.write_all(request).await?;
            self.stdin.flush().await
        };
        if sent.await.is_err() {
            return Exchange::Died;
        }
        let mut answer = String::new();
        let read = (&mut self.stdout).take(most).read_line(&mut answer).await;
        match read {
            Ok(0) | Err(_) => Exchange::Died,
            Ok(_) if !answer.ends_with('\n') => Exchange::TooLong,
            Ok(_) => match serde_json::from_str(&answer) {
                Ok(answer) => Exchange::Answered(answer),
                Err(_) => Exchange::Died,
            },
        }
    }

    /// Why the process stopped, once it has: an abort is an allocation that
    /// failed at the memory cap.
    async fn death(&mut self) -> String {
        use std::os::unix::process::ExitStatusExt;
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.child.wait()).await;
        match waited {
            Ok(Ok(status)) if status.signal() == Some(libc::SIGABRT) => format!(
                "the template renderer stopped: the templates needed more than {} bytes of memory (FLOWPILOT_TEMPLATE_MEMORY_BYTES)",
                self.memory_bytes
            ),
            Ok(Ok(status)) => format!("the template renderer stopped unexpectedly ({status})"),
            _ => "the template renderer stopped answering".to_owned(),
        }
    }
}

/// `flowpilot render-worker`: caps this process's memory, then renders
/// each request line from stdin into one answer line on stdout until stdin
/// closes.
pub fn serve_render_requests(limits: &StepLimits) -> ExitCode {
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets the signal this process
    // gets when its parent ends, so a renderer never outlives its server.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let Some(start) = cap_memory(limits.template_memory_bytes) else {
        eprintln!("error: the renderer's memory cap could not be set");
        return ExitCode::FAILURE;
    };
    // Past half its cap, a renderer answers and then retires, so a process
    // that grew large does not keep that memory while idle.
    let retire_at = start.saturating_add(limits.template_memory_bytes / 2);
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
        if peak_bytes().is_some_and(|peak| peak > retire_at) {
            return ExitCode::SUCCESS;
        }
    }
    ExitCode::SUCCESS
}

/// Caps this process's address space at what it maps now plus `extra`
/// bytes, so an allocation past it fails (and the process ends) instead of
/// taking the machine's memory. Returns the resident size at the start, or
/// `None` when the cap could not be set (the renderer then refuses to run).
/// Without `/proc` (not Linux) there is no cap: fuel and the byte budget
/// still bound a rendering.
fn cap_memory(extra: usize) -> Option<usize> {
    let Some(mapped) = status_bytes("VmSize:") else {
        return Some(0);
    };
    let cap = mapped.saturating_add(extra) as libc::rlim_t;
    let limit = libc::rlimit {
        rlim_cur: cap,
        rlim_max: cap,
    };
    // SAFETY: setrlimit reads the struct we pass and changes only this
    // process's limit.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    if set != 0 {
        return None;
    }
    status_bytes("VmRSS:")
}

/// The process's peak resident size so far.
fn peak_bytes() -> Option<usize> {
    status_bytes("VmHWM:")
}

/// A size from `/proc/self/status` (`VmSize:`, `VmRSS:`, …), in bytes.
pub fn status_bytes(field: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
