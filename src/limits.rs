//! The bounds every request, template, step and password check is held
//! to, as settings grouped by what reads them.
//!
//! Each bound is decided before the work it bounds is done: a document is
//! measured before it is validated, a template runs on fuel, a step's
//! result is measured before it is stored. README's "Limits" table lists
//! every one with its setting.

/// Bounds on GraphQL documents and responses, applied on every transport.
#[derive(clap::Args, Clone, Debug)]
pub struct DocumentLimits {
    /// Most lexical tokens in one GraphQL document.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_QUERY_TOKENS",
        default_value_t = 15_000,
        global = true
    )]
    pub max_query_tokens: usize,
    /// Most fields (and, separately, fragment spreads) in one operation
    /// after fragments are expanded, counted without expanding them.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_QUERY_FIELDS",
        default_value_t = 2_000,
        global = true
    )]
    pub max_query_fields: usize,
    /// Most aliased fields in one operation after fragment expansion.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_QUERY_ALIASES",
        default_value_t = 100,
        global = true
    )]
    pub max_query_aliases: usize,
    /// Most directives in one operation after fragment expansion.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_QUERY_DIRECTIVES",
        default_value_t = 50,
        global = true
    )]
    pub max_query_directives: usize,
    /// Deepest nesting of brackets (`{`, `[`, `(`) in a document's text.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_QUERY_NESTING",
        default_value_t = 64,
        global = true
    )]
    pub max_query_nesting: usize,
    /// Most errors in one response; the rest are summed up in one more.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_RESPONSE_ERRORS",
        default_value_t = 50,
        global = true
    )]
    pub max_response_errors: usize,
    /// Largest response (or subscription message) in bytes of JSON.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_RESPONSE_BYTES",
        default_value_t = 4 * 1024 * 1024,
        global = true
    )]
    pub max_response_bytes: usize,
}

/// Bounds on what one execution may compute and store.
#[derive(clap::Args, Clone, Debug)]
pub struct StepLimits {
    /// Template instructions one rendering of a step's config may run, all
    /// its templates together (1,000,000 took 40–45 ms of CPU in a release
    /// build).
    #[arg(
        long,
        env = "FLOWPILOT_TEMPLATE_FUEL",
        default_value_t = 1_000_000,
        global = true
    )]
    pub template_fuel: u64,
    /// Memory one template-rendering process may take beyond what it holds
    /// when it starts; past it the rendering fails.
    #[arg(
        long,
        env = "FLOWPILOT_TEMPLATE_MEMORY_BYTES",
        default_value_t = 256 * 1024 * 1024,
        global = true
    )]
    pub template_memory_bytes: usize,
    /// The program that renders templates in processes of their own
    /// (`<program> render-worker`); this binary when unset.
    #[arg(long, env = "FLOWPILOT_RENDER_PROGRAM", global = true)]
    pub render_program: Option<std::path::PathBuf>,
    /// Largest step output, step error or FAIL message, and the largest
    /// execution input and output, in bytes of JSON.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_STEP_OUTPUT_BYTES",
        default_value_t = 1024 * 1024,
        global = true
    )]
    pub max_step_output_bytes: usize,
    /// Most steps of one execution running at once.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_PARALLEL_STEPS",
        default_value_t = 32,
        global = true
    )]
    pub max_parallel_steps: usize,
    /// Claims of one execution without progress (a step's outcome
    /// recorded) after which it is failed rather than run again.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_CLAIMS_WITHOUT_PROGRESS",
        default_value_t = 5,
        global = true
    )]
    pub max_claims_without_progress: u32,
}

/// Bounds on password hashing, the costliest thing a request can ask for.
#[derive(clap::Args, Clone, Debug)]
pub struct HashingLimits {
    /// Password hashes computed at once (0: one per CPU core).
    #[arg(
        long,
        env = "FLOWPILOT_PASSWORD_HASHERS",
        default_value_t = 0,
        global = true
    )]
    pub password_hashers: usize,
    /// Password checks that may wait for a hasher; more are RATE_LIMITED.
    #[arg(
        long,
        env = "FLOWPILOT_PASSWORD_HASH_QUEUE",
        default_value_t = 16,
        global = true
    )]
    pub password_hash_queue: usize,
}

impl HashingLimits {
    /// Hashers to run: the setting, or one per CPU core.
    pub fn hashers(&self) -> usize {
        match self.password_hashers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}
