//! The execution journal: the one writer of an execution's life.
//!
//! Every write to an execution, its step runs and its event log goes
//! through here: enqueue (with the step runs and the first event), claims,
//! each transition of the execution or a step, cancel, requeue and hand
//! back. Each change is written in the same transaction as its event, with
//! its seq allocated in one place ([`next_seq`], written beside it as SQL
//! for the claim statement that allocates on rows it has not read) on the
//! execution row that transaction writes; the pure functions of `state`
//! judge every change. A worker keeps the changes it makes in a [`Record`]
//! and writes them together where something outside could see them (see
//! `runner`); records written at the same moment on SQLite share one commit
//! ([`Commits`]).
//! Once committed, the events (and, when work became claimable, a worker
//! wake-up) are published in one place ([`announce`]).
//!
//! Every write a worker makes is fenced by its [`Lease`]: it only applies
//! while the execution's `lease_owner` and `lease_epoch` still match. A
//! worker whose lease was taken over writes nothing.
//!
//! Services (`executions`, `workflows::triggers`, `orgs::deletion`) call the
//! journal; it calls none of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::status::{ExecutionStatus, StepStatus};
use entity::{execution, organization, step_run, trigger, workflow, workflow_version};
use sea_orm::ActiveValue::{NotSet, Set, Unchanged};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ActiveEnum, ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction,
    DbBackend, DbErr, EntityTrait, FromQueryResult, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::state::{
    ExecutionChange, IllegalTransition, RequeueReason, execution_transition, step_transition,
};
use super::storable;
use crate::db::{begin_write, locked};
use crate::error::{AppError, AppResult};
use crate::events::log::{self, EventKind, ExecutionEventRecord, StepSnapshot};
use crate::events::watermark;
use crate::events::{BusMessage, Topic};
use crate::state::AppState;
use crate::workflows::definition::WorkflowDefinition;

/// A worker's hold on one execution: valid while owner and epoch match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub execution_id: Uuid,
    pub owner: String,
    pub epoch: i64,
}

/// Why an engine write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another worker holds the execution now; this one must stop.
    #[error("the lease was lost")]
    LeaseLost,
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl From<EngineError> for crate::error::AppError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Db(db) => db.into(),
            other => Self::Internal(other.into()),
        }
    }
}

/// An execution a worker has just claimed, with its step runs as written.
#[derive(Debug)]
pub struct Claimed {
    pub execution: execution::Model,
    pub lease: Lease,
    pub steps: Vec<step_run::Model>,
}

impl Claimed {
    /// `execution` as a claim statement started it for `owner`, under the
    /// epoch it wrote.
    fn started(execution: execution::Model, owner: &str) -> Self {
        Self {
            lease: Lease {
                execution_id: execution.id,
                owner: owner.to_owned(),
                epoch: execution.lease_epoch,
            },
            execution,
            steps: Vec::new(),
        }
    }
}

/// Sorts executions a statement claimed (it returns them in no order) in
/// claim order: priority, then age.
fn in_claim_order(claimed: &mut [Claimed]) {
    claimed.sort_by_key(|c| {
        (
            std::cmp::Reverse(c.execution.priority),
            c.execution.queued_at,
            c.execution.id,
        )
    });
}

/// What a step change writes besides the status.
#[derive(Debug, Default)]
pub struct StepUpdate {
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// The attempt failed: count it against the retry policy.
    pub failed: bool,
    /// When a RETRYING step may run again (now, when absent).
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// What an execution change writes besides the status.
#[derive(Debug, Default)]
pub struct ExecutionUpdate {
    pub output: Option<Value>,
    pub error: Option<String>,
    /// For a parked execution: not to be claimed before this time.
    pub run_after: Option<DateTime<Utc>>,
}

/// How urgently an execution should be claimed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// The stored value: higher is claimed first.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::High => 1,
            Self::Normal => 0,
            Self::Low => -1,
        }
    }

    /// The priority a stored value stands for.
    pub fn from_i32(value: i32) -> Self {
        match value {
            v if v > 0 => Self::High,
            0 => Self::Normal,
            _ => Self::Low,
        }
    }
}

/// How long an idempotency key returns the execution it started.
pub const IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// Longest idempotency key, in characters.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// An idempotency key: trimmed, 1 to 255 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses user input; `field` names the input field in the error.
    pub fn parse(raw: &str, field: &str) -> AppResult<Self> {
        let key = raw.trim();
        if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(AppError::bad_input(
                field,
                format!("an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
            ));
        }
        Ok(Self(key.to_owned()))
    }
}

/// What started an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `runWorkflow` or `retryExecution`, by a person or a key.
    Manual,
    /// A schedule or webhook trigger: its kind's stored name
    /// (`SCHEDULE`, `WEBHOOK`) and its id.
    Trigger { kind: &'static str, id: Uuid },
}

impl Origin {
    fn kind(self) -> &'static str {
        match self {
            Self::Manual => "MANUAL",
            Self::Trigger { kind, .. } => kind,
        }
    }

    fn trigger_id(self) -> Option<Uuid> {
        match self {
            Self::Manual => None,
            Self::Trigger { id, .. } => Some(id),
        }
    }
}

/// Refuses an execution input that is larger than the limit or holds text
/// no backend can store, the same on every backend.
fn check_input(input: &Value, max_bytes: usize) -> AppResult<()> {
    if storable::has_nul(input) {
        return Err(AppError::bad_input(
            "input",
            "text may not contain the NUL character (U+0000)",
        ));
    }
    let len = storable::json_len(input);
    if len > max_bytes {
        return Err(AppError::bad_input(
            "input",
            format!("the input is {len} bytes, over the limit of {max_bytes}"),
        ));
    }
    Ok(())
}

/// An execution to queue.
pub struct NewExecution<'a> {
    pub workflow: &'a workflow::Model,
    pub version_id: Uuid,
    pub input: Value,
    pub priority: Priority,
    pub idempotency_key: Option<IdempotencyKey>,
    pub created_by: Option<Uuid>,
    pub retry_of_id: Option<Uuid>,
    pub origin: Origin,
}

/// Inserts a QUEUED execution with its PENDING step runs and its first
/// event in one transaction, then publishes the event and wakes workers.
/// With an idempotency key, the workflow row is locked first so two
/// requests with the same key cannot both insert.
pub async fn enqueue(state: &AppState, new: NewExecution<'_>) -> AppResult<execution::Model> {
    check_input(
        &new.input,
        state.config.settings.steps.max_step_output_bytes,
    )?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    if let Some(key) = &new.idempotency_key {
        locked(workflow::Entity::find_by_id(new.workflow.id), &txn)
            .one(&txn)
            .await?;
        // Keys are scoped to their source: manual runs of the workflow, or
        // one trigger's deliveries.
        let source = match new.origin.trigger_id() {
            Some(trigger_id) => execution::Column::TriggerId.eq(trigger_id),
            None => execution::Column::TriggerKind.eq(new.origin.kind()),
        };
        let earlier = execution::Entity::find()
            .filter(execution::Column::WorkflowId.eq(new.workflow.id))
            .filter(source)
            .filter(execution::Column::IdempotencyKey.eq(key.0.as_str()))
            .filter(execution::Column::QueuedAt.gt(now - IDEMPOTENCY_WINDOW))
            .order_by_desc(execution::Column::QueuedAt)
            .one(&txn)
            .await?;
        if let Some(earlier) = earlier {
            txn.commit().await?;
            return Ok(earlier);
        }
    }
    let queued = insert_queued(&txn, new, now).await?;
    txn.commit().await?;
    Ok(announce_queued(state, queued).await)
}

/// An execution inserted by [`insert_queued`] whose transaction has not
/// been announced yet.
pub struct Queued {
    execution: execution::Model,
    event: ExecutionEventRecord,
}

/// Inserts a QUEUED execution, its PENDING step runs and its first event
/// inside `txn`, and notes the firing on its trigger. The caller commits
/// and then calls [`announce_queued`].
pub async fn insert_queued(
    txn: &DatabaseTransaction,
    new: NewExecution<'_>,
    now: DateTime<Utc>,
) -> AppResult<Queued> {
    let version = workflow_version::Entity::find_by_id(new.version_id)
        .one(txn)
        .await?
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!(
                "workflow version {} is missing",
                new.version_id
            ))
        })?;
    let definition =
        WorkflowDefinition::from_stored(&version.definition).map_err(AppError::Internal)?;
    let execution = execution::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(new.workflow.organization_id),
        workflow_id: Set(new.workflow.id),
        workflow_version_id: Set(version.id),
        status: Set(ExecutionStatus::Queued),
        priority: Set(new.priority.as_i32()),
        input: Set(new.input),
        output: Set(None),
        error: Set(None),
        trigger_kind: Set(new.origin.kind().to_owned()),
        trigger_id: Set(new.origin.trigger_id()),
        idempotency_key: Set(new.idempotency_key.map(|key| key.0)),
        attempt: Set(0),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        lease_epoch: Set(0),
        claims_without_progress: Set(0),
        cancel_requested: Set(false),
        run_after: Set(None),
        last_event_seq: NotSet,
        created_by: Set(new.created_by),
        retry_of_id: Set(new.retry_of_id),
        queued_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
        updated_at: Set(now),
        timeout_ms: Set(definition.timeout_ms.map(|ms| ms as i64)),
        timeout_at: Set(None),
    };
    let mut execution = execution;
    allocate_seq(&mut execution);
    let execution = execution.insert(txn).await?;
    let steps: Vec<step_run::ActiveModel> = definition
        .steps
        .iter()
        .zip(0..)
        .map(|(step, position)| step_run::ActiveModel {
            id: Set(Uuid::now_v7()),
            execution_id: Set(execution.id),
            step_id: Set(step.id.clone()),
            position: Set(position),
            status: Set(StepStatus::Pending),
            attempt: Set(0),
            failed_attempts: Set(0),
            input: Set(None),
            output: Set(None),
            error: Set(None),
            next_retry_at: Set(None),
            started_at: Set(None),
            finished_at: Set(None),
            updated_at: Set(now),
        })
        .collect();
    step_run::Entity::insert_many(steps).exec(txn).await?;
    if let Some(trigger_id) = new.origin.trigger_id() {
        // Also orders the firing against a trigger being switched off or
        // deleted meanwhile: then it starts nothing.
        let fired = trigger::Entity::update_many()
            .col_expr(trigger::Column::LastFiredAt, Expr::value(now))
            .filter(trigger::Column::Id.eq(trigger_id))
            .filter(trigger::Column::Enabled.eq(true))
            .exec(txn)
            .await?;
        if fired.rows_affected == 0 {
            return Err(AppError::NotFound("trigger"));
        }
    }
    let event = log::append(txn, &execution, EventKind::ExecutionQueued, None, now).await?;
    Ok(Queued { execution, event })
}

/// Publishes a committed execution's first event and wakes workers.
pub async fn announce_queued(state: &AppState, queued: Queued) -> execution::Model {
    let Queued { execution, event } = queued;
    announce(state, vec![event], Wake::Workers).await;
    tracing::info!(
        execution_id = %execution.id,
        workflow_id = %execution.workflow_id,
        trigger = execution.trigger_kind.as_str(),
        "execution queued"
    );
    execution
}

/// Claims the most urgent runnable execution (priority, then age, with
/// `run_after` due) for `owner`; see [`claim_executions`].
pub async fn claim_next_execution(
    state: &AppState,
    owner: &str,
    lease_for: Duration,
) -> Result<Option<Claimed>, EngineError> {
    Ok(claim_executions(state, owner, lease_for, 1).await?.pop())
}

/// Claims up to `most` of the most urgent runnable executions (priority,
/// then age, with `run_after` due) for `owner`, bumping each one's lease
/// epoch and logging its EXECUTION_STARTED, with their step runs. When no
/// concurrency limit governs the candidates, one statement starts them
/// all: on PostgreSQL committed on its own and returning their step runs
/// too ([`claim_in_one_statement`]); in a transaction with their events on
/// SQLite ([`start_unlimited`]); otherwise one transaction weighs each
/// candidate against its limits ([`claim_in_transaction`]). Step runs not
/// returned by the claim are read in one more statement.
pub async fn claim_executions(
    state: &AppState,
    owner: &str,
    lease_for: Duration,
    most: usize,
) -> Result<Vec<Claimed>, EngineError> {
    if most == 0 {
        return Ok(Vec::new());
    }
    if let Some(claimed) = claim_in_one_statement(state, owner, lease_for, most).await? {
        return Ok(claimed);
    }
    let mut claimed = claim_in_transaction(state, owner, lease_for, most).await?;
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.execution.id).collect();
    if !ids.is_empty() {
        let mut steps: HashMap<Uuid, Vec<step_run::Model>> = HashMap::new();
        for step in step_run::Entity::find()
            .filter(step_run::Column::ExecutionId.is_in(ids))
            .all(&state.db)
            .await?
        {
            steps.entry(step.execution_id).or_default().push(step);
        }
        for claim in &mut claimed {
            claim.steps = steps.remove(&claim.execution.id).unwrap_or_default();
        }
    }
    Ok(claimed)
}

/// On PostgreSQL, when no organization limit is set: claims up to `most`
/// executions in one statement committed on its own. It locks the
/// candidates (skipping those another claim holds), starts them and logs
/// their EXECUTION_STARTED events, as data-modifying `WITH` queries, and
/// returns their step runs (as JSON, saving the round trip of a read that
/// every claim waits for). `None`
/// when this claim is not for it: on SQLite, under an organization limit,
/// or when a candidate is a first start its workflow's limit governs (then
/// nothing is claimed here, so the claim that weighs limits keeps the
/// order).
async fn claim_in_one_statement(
    state: &AppState,
    owner: &str,
    lease_for: Duration,
    most: usize,
) -> Result<Option<Vec<Claimed>>, EngineError> {
    if state.db.get_database_backend() != DbBackend::Postgres
        || state.config.settings.org_max_concurrency != 0
    {
        return Ok(None);
    }
    let now = state.clock.now();
    let ClaimValues {
        mut params,
        queued,
        due: now_at,
        status,
        lease_owner,
        expires,
    } = ClaimValues::new(DbBackend::Postgres, now, owner, lease_for)?;
    let kind = params.one(EventKind::ExecutionStarted.as_str().into());
    let ids: Vec<String> = (1..=most)
        .map(|n| format!("({n}, {}::uuid)", params.one(Uuid::now_v7().into())))
        .collect();
    let sql = format!(
        "WITH candidates AS ({candidates} FOR UPDATE SKIP LOCKED), \
         started AS (\
           UPDATE executions AS e SET status = {status}, lease_owner = {lease_owner}, \
             lease_expires_at = {expires}, lease_epoch = e.lease_epoch + 1, \
             attempt = e.attempt + 1, started_at = COALESCE(e.started_at, {now_at}), \
             run_after = NULL, timeout_at = COALESCE(e.timeout_at, \
               COALESCE(e.started_at, {now_at}) + e.timeout_ms * INTERVAL '1 millisecond'), \
             last_event_seq = {NEXT_SEQ_SQL}, updated_at = {now_at}, \
             claims_without_progress = e.claims_without_progress + 1 \
           FROM candidates AS c \
           WHERE e.id = c.id AND NOT EXISTS (SELECT 1 FROM candidates WHERE limited) \
           RETURNING e.*), \
         numbered AS (SELECT s.*, row_number() OVER (ORDER BY s.id) AS n FROM started AS s), \
         events AS (\
           INSERT INTO execution_events ({event_columns}) \
           SELECT ids.id, s.id, s.organization_id, s.workflow_id, s.last_event_seq, {kind}, \
             {payload}, \
             {now_at}, {position} \
           FROM numbered AS s JOIN (VALUES {ids}) AS ids (n, id) ON ids.n = s.n \
           RETURNING execution_id, position) \
         SELECT (SELECT count(*) FROM candidates) AS candidates, s.*, ev.position AS event_position, \
           (SELECT json_agg(r) FROM step_runs AS r WHERE r.execution_id = s.id) AS step_runs \
         FROM (SELECT 1) AS one \
         LEFT JOIN (started AS s JOIN events AS ev ON ev.execution_id = s.id) ON true",
        candidates = claim_candidates_sql(&queued, &now_at, most),
        event_columns = log::EVENT_COLUMNS.join(", "),
        payload = log::execution_payload_sql("s"),
        position = watermark::position_of_this_write(DbBackend::Postgres),
        ids = ids.join(", "),
    );
    // `most` is a literal, so each size of claim has its own prepared
    // statement whose generic plan reads the claim index in order; as a
    // parameter it left the planner guessing and planning every claim.
    let rows = state.db.query_all_raw(params.statement(sql)).await?;
    let mut claimed = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    let mut candidates = 0;
    for row in rows {
        candidates = row.try_get::<i64>("", "candidates")?;
        if row.try_get::<Option<Uuid>>("", "id")?.is_none() {
            continue;
        }
        let execution = execution::Model::from_query_result(&row, "")?;
        let mut event =
            ExecutionEventRecord::of_change(&execution, EventKind::ExecutionStarted, None, now);
        event.position = row.try_get("", "event_position")?;
        events.push(event);
        let mut claim = Claimed::started(execution, owner);
        let steps: Option<serde_json::Value> = row.try_get("", "step_runs")?;
        if let Some(steps) = steps {
            claim.steps = serde_json::from_value(steps)
                .map_err(|err| DbErr::Type(format!("a claimed execution's step runs: {err}")))?;
        }
        claimed.push(claim);
    }
    if claimed.is_empty() && candidates > 0 {
        return Ok(None);
    }
    in_claim_order(&mut claimed);
    announce(state, events, Wake::Nobody).await;
    Ok(Some(claimed))
}

/// Claims up to `most` executions in one transaction, in claim order,
/// passing over first starts for which their workflow or organization has
/// no room; their EXECUTION_STARTED events are written in one statement.
/// On SQLite, when no organization limit is set, one statement first tries
/// to start the first candidates ([`start_unlimited`]); when it started
/// none, the candidates are weighed against their limits
/// ([`weigh_and_start`]). On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets
/// concurrent claimers pass each other; on SQLite the write transaction is
/// exclusive anyway.
async fn claim_in_transaction(
    state: &AppState,
    owner: &str,
    lease_for: Duration,
    most: usize,
) -> Result<Vec<Claimed>, EngineError> {
    let txn = begin_write(&state.db).await?;
    let mut started: Started = (Vec::new(), Vec::new());
    if txn.get_database_backend() == DbBackend::Sqlite
        && state.config.settings.org_max_concurrency == 0
    {
        started = start_unlimited(state, &txn, owner, lease_for, most).await?;
    }
    if started.0.is_empty() {
        started = weigh_and_start(state, &txn, owner, lease_for, most).await?;
    }
    let (claimed, events) = started;
    if claimed.is_empty() {
        return Ok(claimed);
    }
    txn.commit().await?;
    announce(state, events, Wake::Nobody).await;
    Ok(claimed)
}

/// The weighing claim of [`claim_in_transaction`], in the write transaction
/// `txn`: the executions it started, and their events, written.
async fn weigh_and_start(
    state: &AppState,
    txn: &DatabaseTransaction,
    owner: &str,
    lease_for: Duration,
    most: usize,
) -> Result<Started, EngineError> {
    let now = state.clock.now();
    let settings = &state.config.settings;
    let mut room = Room::default();
    let mut chosen = Vec::with_capacity(most);
    // As many candidates as are wanted, and a few more, first: those with
    // room are nearly always among them, and each one read is locked until
    // the claim commits. Only when too few have room is the longer list read.
    let first_page = (most as u64 + CLAIM_FIRST_CANDIDATES).min(CLAIM_CANDIDATES);
    let mut seen = std::collections::HashSet::new();
    for page in [first_page, CLAIM_CANDIDATES] {
        let candidates = claim_candidates(txn, now, page).await?;
        let last_page = (candidates.len() as u64) < page;
        for candidate in candidates {
            if !seen.insert(candidate.id) {
                continue;
            }
            // A started execution (handed back, parked) already counts
            // against the limits; only a first start needs room.
            if candidate.started_at.is_some()
                || room
                    .for_first_start(txn, &candidate, settings.org_max_concurrency)
                    .await?
            {
                room.took(&candidate);
                chosen.push(candidate);
                if chosen.len() == most {
                    break;
                }
            }
        }
        if chosen.len() == most || last_page {
            break;
        }
    }
    if chosen.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // The start is stamped after the locks and counts above, so it is never
    // earlier than the finish of an execution whose room it took.
    let now = state.clock.now();
    let mut claimed = Vec::with_capacity(chosen.len());
    let mut events = Vec::with_capacity(chosen.len());
    for candidate in chosen {
        let (execution, lease) = start(txn, candidate, owner, lease_for, now).await?;
        events.push(ExecutionEventRecord::of_change(
            &execution,
            EventKind::ExecutionStarted,
            None,
            now,
        ));
        claimed.push(Claimed {
            execution,
            lease,
            steps: Vec::new(),
        });
    }
    log::write(txn, &mut events).await?;
    Ok((claimed, events))
}

/// The values a claim statement binds, and their placeholders.
struct ClaimValues {
    params: Params,
    /// The status of a candidate.
    queued: String,
    /// Now: a candidate's `run_after` is due by then.
    due: String,
    /// The status a claim gives, as `state` judges it.
    status: String,
    lease_owner: String,
    /// When the lease expires.
    expires: String,
}

impl ClaimValues {
    fn new(
        backend: DbBackend,
        now: DateTime<Utc>,
        owner: &str,
        lease_for: Duration,
    ) -> Result<Self, EngineError> {
        let running = execution_transition(
            ExecutionStatus::Queued,
            ExecutionChange::To(ExecutionStatus::Running),
        )?;
        let mut params = Params::new(backend);
        let queued = params.one(ExecutionStatus::Queued.to_value().into());
        let due = params.one(now.into());
        let status = params.one(running.to_value().into());
        let lease_owner = params.one(owner.to_owned().into());
        let expires =
            params.one((now + chrono::Duration::from_std(lease_for).unwrap_or_default()).into());
        Ok(Self {
            params,
            queued,
            due,
            status,
            lease_owner,
            expires,
        })
    }
}

/// The first `most` runnable candidates of a claim statement, in claim
/// order, each with whether it is a first start its workflow's limit
/// governs (`limited`); `queued` and `due` are their placeholders, `most`
/// a literal (see [`claim_in_one_statement`]).
fn claim_candidates_sql(queued: &str, due: &str, most: usize) -> String {
    format!(
        "SELECT e.id, e.started_at IS NULL AND EXISTS (SELECT 1 FROM workflows AS w \
           WHERE w.id = e.workflow_id AND w.max_concurrency IS NOT NULL) AS limited \
         FROM executions AS e \
         WHERE e.status = {queued} AND (e.run_after IS NULL OR e.run_after <= {due}) \
         ORDER BY e.priority DESC, e.queued_at, e.id LIMIT {most}"
    )
}

/// Executions a claim started, and their EXECUTION_STARTED events, written.
type Started = (Vec<Claimed>, Vec<ExecutionEventRecord>);

/// On SQLite, in the claim's write transaction: one `UPDATE … RETURNING`
/// that starts the first `most` candidates in claim order, unless a first
/// start among them is governed by its workflow's limit; and their
/// EXECUTION_STARTED events, written in one statement. None started when a
/// limit governs one.
async fn start_unlimited(
    state: &AppState,
    txn: &DatabaseTransaction,
    owner: &str,
    lease_for: Duration,
    most: usize,
) -> Result<Started, EngineError> {
    let now = state.clock.now();
    let ClaimValues {
        mut params,
        queued,
        due,
        status,
        lease_owner,
        expires,
    } = ClaimValues::new(DbBackend::Sqlite, now, owner, lease_for)?;
    // SQLite binds a value once per placeholder.
    let started_at = params.one(now.into());
    let updated_at = params.one(now.into());
    let sql = format!(
        "WITH candidates AS ({candidates}) \
         UPDATE executions SET status = {status}, lease_owner = {lease_owner}, \
           lease_expires_at = {expires}, lease_epoch = lease_epoch + 1, \
           attempt = attempt + 1, started_at = COALESCE(started_at, {started_at}), \
           run_after = NULL, last_event_seq = {NEXT_SEQ_SQL}, updated_at = {updated_at}, \
           claims_without_progress = claims_without_progress + 1 \
         WHERE id IN (SELECT id FROM candidates) \
           AND NOT EXISTS (SELECT 1 FROM candidates WHERE limited) \
         RETURNING *",
        candidates = claim_candidates_sql(&queued, &due, most),
    );
    let rows = txn.query_all_raw(params.statement(sql)).await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let mut execution = execution::Model::from_query_result(&row, "")?;
        // A first start's deadline counts from it (the statement leaves it
        // to here, as SQLite keeps times as text).
        if execution.timeout_at.is_none()
            && let (Some(ms), Some(started_at)) = (execution.timeout_ms, execution.started_at)
        {
            let deadline = started_at + chrono::Duration::milliseconds(ms);
            execution::Entity::update_many()
                .col_expr(execution::Column::TimeoutAt, Expr::value(deadline))
                .filter(execution::Column::Id.eq(execution.id))
                .exec(txn)
                .await?;
            execution.timeout_at = Some(deadline);
        }
        claimed.push(Claimed::started(execution, owner));
    }
    in_claim_order(&mut claimed);
    let mut events: Vec<ExecutionEventRecord> = claimed
        .iter()
        .map(|c| {
            ExecutionEventRecord::of_change(&c.execution, EventKind::ExecutionStarted, None, now)
        })
        .collect();
    if !events.is_empty() {
        log::write(txn, &mut events).await?;
    }
    Ok((claimed, events))
}

/// Starts a claimed candidate under a new lease for `owner`.
async fn start(
    txn: &DatabaseTransaction,
    candidate: execution::Model,
    owner: &str,
    lease_for: Duration,
    now: DateTime<Utc>,
) -> Result<(execution::Model, Lease), EngineError> {
    let status = execution_transition(
        candidate.status,
        ExecutionChange::To(ExecutionStatus::Running),
    )?;
    let lease = Lease {
        execution_id: candidate.id,
        owner: owner.to_owned(),
        epoch: candidate.lease_epoch + 1,
    };
    let started_at = candidate.started_at.unwrap_or(now);
    let attempt = candidate.attempt + 1;
    let claims = candidate.claims_without_progress.saturating_add(1);
    let mut active = candidate.into_active_model();
    active.status = Set(status);
    active.lease_owner = Set(Some(lease.owner.clone()));
    active.lease_expires_at = Set(Some(
        now + chrono::Duration::from_std(lease_for).unwrap_or_default(),
    ));
    active.lease_epoch = Set(lease.epoch);
    active.attempt = Set(attempt);
    active.started_at = Set(Some(started_at));
    active.run_after = Set(None);
    if active.timeout_at.as_ref().is_none()
        && let Some(ms) = *active.timeout_ms.as_ref()
    {
        active.timeout_at = Set(Some(started_at + chrono::Duration::milliseconds(ms)));
    }
    allocate_seq(&mut active);
    active.updated_at = Set(now);
    active.claims_without_progress = Set(claims);
    let execution = active.update(txn).await?;
    Ok((execution, lease))
}

/// Queued executions a claim considers first, in order.
const CLAIM_FIRST_CANDIDATES: u64 = 4;
/// Queued executions one claim considers, in order, before giving up.
const CLAIM_CANDIDATES: u64 = 100;

/// The first `limit` runnable queued executions in claim order (priority,
/// then age, with `run_after` due), locked; on PostgreSQL skipping those
/// another claim holds. SQLite's write transaction is exclusive anyway.
async fn claim_candidates(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<execution::Model>, DbErr> {
    let mut query = execution::Entity::find()
        .filter(execution::Column::Status.eq(ExecutionStatus::Queued))
        .filter(
            Condition::any()
                .add(execution::Column::RunAfter.is_null())
                .add(execution::Column::RunAfter.lte(now)),
        )
        .order_by_desc(execution::Column::Priority)
        .order_by_asc(execution::Column::QueuedAt)
        .order_by_asc(execution::Column::Id)
        .limit(limit);
    if txn.get_database_backend() == DbBackend::Postgres {
        query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    query.all(txn).await
}

/// How many more executions each workflow and organization can start, as
/// found during one claim (and less what the claim itself started). The
/// first look at each locks its row for the rest of the claim's
/// transaction, so two claims can't both see the same room.
#[derive(Default)]
struct Room {
    workflows: HashMap<Uuid, u64>,
    organizations: HashMap<Uuid, u64>,
}

impl Room {
    /// Counts a claimed first start against its workflow's and
    /// organization's room for the rest of the claim.
    fn took(&mut self, candidate: &execution::Model) {
        if candidate.started_at.is_some() {
            return;
        }
        for (id, room) in [
            (candidate.workflow_id, &mut self.workflows),
            (candidate.organization_id, &mut self.organizations),
        ] {
            if let Some(left) = room.get_mut(&id) {
                *left = left.saturating_sub(1);
            }
        }
    }

    async fn for_first_start(
        &mut self,
        txn: &DatabaseTransaction,
        candidate: &execution::Model,
        org_cap: u32,
    ) -> Result<bool, DbErr> {
        let workflow_room = match self.workflows.get(&candidate.workflow_id) {
            Some(left) => *left,
            None => {
                let workflow = locked(workflow::Entity::find_by_id(candidate.workflow_id), txn)
                    .one(txn)
                    .await?;
                let left = match workflow.and_then(|w| w.max_concurrency) {
                    Some(limit) => (limit.max(0) as u64).saturating_sub(
                        started_unfinished(
                            txn,
                            execution::Column::WorkflowId,
                            candidate.workflow_id,
                        )
                        .await?,
                    ),
                    None => u64::MAX,
                };
                self.workflows.insert(candidate.workflow_id, left);
                left
            }
        };
        if org_cap == 0 || workflow_room == 0 {
            return Ok(workflow_room > 0);
        }
        let organization_room = match self.organizations.get(&candidate.organization_id) {
            Some(left) => *left,
            None => {
                locked(
                    organization::Entity::find_by_id(candidate.organization_id),
                    txn,
                )
                .one(txn)
                .await?;
                let left = u64::from(org_cap).saturating_sub(
                    started_unfinished(
                        txn,
                        execution::Column::OrganizationId,
                        candidate.organization_id,
                    )
                    .await?,
                );
                self.organizations.insert(candidate.organization_id, left);
                left
            }
        };
        Ok(organization_room > 0)
    }
}

/// Executions started and not finished (running, or back in the queue) of
/// the workflow or organization `id`.
async fn started_unfinished(
    txn: &DatabaseTransaction,
    scope: execution::Column,
    id: Uuid,
) -> Result<u64, DbErr> {
    execution::Entity::find()
        .filter(scope.eq(id))
        .filter(execution::Column::StartedAt.is_not_null())
        .filter(
            execution::Column::Status.is_in([ExecutionStatus::Running, ExecutionStatus::Queued]),
        )
        .count(txn)
        .await
}

/// Extends the lease; [`EngineError::LeaseLost`] when it is no longer ours.
/// Returns whether a cancel was requested (the fallback to the control
/// topic's `CancelRequested`).
pub async fn renew_lease(
    state: &AppState,
    lease: &Lease,
    lease_for: Duration,
) -> Result<bool, EngineError> {
    let now = state.clock.now();
    let renewed = execution::Entity::update_many()
        .col_expr(
            execution::Column::LeaseExpiresAt,
            Expr::value(now + chrono::Duration::from_std(lease_for).unwrap_or_default()),
        )
        .filter(execution::Column::Id.eq(lease.execution_id))
        .filter(execution::Column::LeaseOwner.eq(lease.owner.as_str()))
        .filter(execution::Column::LeaseEpoch.eq(lease.epoch))
        .filter(execution::Column::Status.eq(ExecutionStatus::Running))
        .exec(&state.db)
        .await?;
    if renewed.rows_affected != 1 {
        return Err(EngineError::LeaseLost);
    }
    let cancel_requested: Option<bool> = execution::Entity::find_by_id(lease.execution_id)
        .select_only()
        .column(execution::Column::CancelRequested)
        .into_tuple()
        .one(&state.db)
        .await?;
    Ok(cancel_requested.unwrap_or(false))
}

/// What a cancel request did.
#[derive(Debug)]
pub enum CancelOutcome {
    /// The execution was queued and is now CANCELLED.
    Cancelled(execution::Model),
    /// The execution is running; its worker has been asked to stop.
    Requested(execution::Model),
    /// The execution had already finished.
    AlreadyFinished(execution::Model),
}

/// Cancels an execution: a QUEUED one at once (its steps end CANCELLED),
/// a RUNNING one by setting `cancel_requested` and telling every instance
/// on the control topic; its runner then cancels what runs.
pub async fn cancel(state: &AppState, execution_id: Uuid) -> Result<CancelOutcome, EngineError> {
    let txn = begin_write(&state.db).await?;
    let Some(execution) = locked_execution(&txn, execution_id).await? else {
        return Err(EngineError::Db(DbErr::RecordNotFound(format!(
            "execution {execution_id}"
        ))));
    };
    // Timestamps are taken once the row is ours, so they order like commits.
    let now = state.clock.now();
    match execution.status {
        ExecutionStatus::Queued => {
            let cancel = ExecutionChange::To(ExecutionStatus::Cancelled);
            let unfinished = [StepStatus::Pending, StepStatus::Retrying];
            let (execution, events) = settle(
                &txn,
                execution,
                &unfinished,
                StepStatus::Cancelled,
                None,
                cancel,
                ExecutionUpdate::default(),
                now,
            )
            .await?;
            txn.commit().await?;
            announce(state, events, Wake::Nobody).await;
            Ok(CancelOutcome::Cancelled(execution))
        }
        ExecutionStatus::Running => {
            let mut active = execution.into_active_model();
            active.cancel_requested = Set(true);
            active.updated_at = Set(now);
            let execution = active.update(&txn).await?;
            txn.commit().await?;
            state
                .bus
                .publish(Topic::Control, BusMessage::CancelRequested { execution_id })
                .await;
            Ok(CancelOutcome::Requested(execution))
        }
        _ => Ok(CancelOutcome::AlreadyFinished(execution)),
    }
}

/// Moves one step to `to` under the lease and writes it on its own, as a
/// [`Record`] of one change.
pub async fn change_step(
    state: &AppState,
    lease: &Lease,
    step_id: &str,
    to: StepStatus,
    update: StepUpdate,
) -> Result<step_run::Model, EngineError> {
    let execution = execution::Entity::find_by_id(lease.execution_id)
        .one(&state.db)
        .await?
        .ok_or(EngineError::LeaseLost)?;
    if !holds(&execution, lease) {
        return Err(EngineError::LeaseLost);
    }
    let step = step_run::Entity::find()
        .filter(step_run::Column::ExecutionId.eq(lease.execution_id))
        .filter(step_run::Column::StepId.eq(step_id))
        .one(&state.db)
        .await?
        .ok_or_else(|| {
            DbErr::RecordNotFound(format!("step run {step_id} of execution {}", execution.id))
        })?;
    let mut record = Record::new(execution, lease.clone());
    let step = record.change_step(&step, to, update, state.clock.now())?;
    record.write(state).await?;
    Ok(step)
}

/// Changes the execution's status under the lease, recording its event.
/// A terminal status or a requeue releases the lease.
pub async fn change_execution(
    state: &AppState,
    lease: &Lease,
    change: ExecutionChange,
    update: ExecutionUpdate,
) -> Result<execution::Model, EngineError> {
    let txn = begin_write(&state.db).await?;
    let execution = fenced_execution(&txn, lease).await?;
    // Timestamps are taken once the row is ours, so they order like commits.
    let now = state.clock.now();
    let (execution, event) = apply_execution_change(&txn, execution, change, update, now).await?;
    txn.commit().await?;
    announce(state, vec![event], Wake::when_queued(&execution)).await;
    Ok(execution)
}

/// The changes a worker makes to its claimed execution, in order: kept
/// until [`Record::write`] writes them in one transaction, fenced by the
/// lease. The runner writes before anything outside the engine can see a
/// step (before an HTTP request, while it waits, at the end), so steps that
/// run in memory and the execution's end meet in one commit.
#[derive(Debug)]
pub struct Record {
    lease: Lease,
    /// The execution as of the last change, written or not.
    execution: execution::Model,
    /// The execution as last written.
    written: execution::Model,
    /// Step rows changed since the last write, as they are now.
    steps: Vec<step_run::Model>,
    events: Vec<ExecutionEventRecord>,
}

/// Changes one [`Record`] holds before it writes them on its own.
pub const RECORD_MAX_EVENTS: usize = 256;

impl Record {
    pub fn new(execution: execution::Model, lease: Lease) -> Self {
        Self {
            lease,
            written: execution.clone(),
            execution,
            steps: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Changes not written yet.
    pub fn pending(&self) -> usize {
        self.events.len()
    }

    /// Moves `step` (as this worker last saw it) to `to`; returns the row
    /// as it is now.
    pub fn change_step(
        &mut self,
        step: &step_run::Model,
        to: StepStatus,
        update: StepUpdate,
        now: DateTime<Utc>,
    ) -> Result<step_run::Model, EngineError> {
        let (step, progressed) = step_after(step.clone(), to, update, now)?;
        let kind = step_event(step.status)?;
        if progressed {
            self.execution.claims_without_progress = 0;
        }
        self.execution.last_event_seq = next_seq(self.execution.last_event_seq);
        self.execution.updated_at = now;
        self.events.push(ExecutionEventRecord::of_change(
            &self.execution,
            kind,
            Some(StepSnapshot::from(&step)),
            now,
        ));
        match self.steps.iter_mut().find(|s| s.id == step.id) {
            Some(kept) => *kept = step.clone(),
            None => self.steps.push(step.clone()),
        }
        Ok(step)
    }

    /// Changes the execution's status. A terminal status or a requeue
    /// releases the lease once written.
    pub fn change_execution(
        &mut self,
        change: ExecutionChange,
        update: ExecutionUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        self.execution = execution_after(self.execution.clone(), change, update, now)?;
        self.events.push(ExecutionEventRecord::of_change(
            &self.execution,
            EventKind::for_execution(self.execution.status),
            None,
            now,
        ));
        Ok(())
    }

    /// Forgets the changes not written (after a failed write).
    pub fn discard(&mut self) {
        self.execution = self.written.clone();
        self.steps.clear();
        self.events.clear();
    }

    /// Writes the pending changes in one transaction: the execution row
    /// (only while the lease holds), the changed step rows, and the events
    /// in one statement; then publishes them. Records other workers write
    /// at the same moment share the transaction (see [`Commits`]). On an
    /// error nothing is written and the changes stay pending.
    pub async fn write(&mut self, state: &AppState) -> Result<(), EngineError> {
        if self.events.is_empty() {
            return Ok(());
        }
        let batch = Batch {
            lease: self.lease.clone(),
            execution: self.execution.clone(),
            steps: std::mem::take(&mut self.steps),
            events: std::mem::take(&mut self.events),
            outcome: None,
        };
        let mut batch = state.commits.submit(state, batch).await?;
        match batch.outcome.take().unwrap_or_else(|| Err(interrupted())) {
            Ok(()) => {
                self.written = self.execution.clone();
                announce(state, batch.events, Wake::when_queued(&self.execution)).await;
                Ok(())
            }
            Err(err) => {
                (self.steps, self.events) = (batch.steps, batch.events);
                Err(err)
            }
        }
    }
}

/// A write whose leader stopped before it answered.
fn interrupted() -> EngineError {
    DbErr::Custom("the write was interrupted".to_owned()).into()
}

/// One record's pending changes, on their way to the database.
#[derive(Debug)]
struct Batch {
    lease: Lease,
    execution: execution::Model,
    steps: Vec<step_run::Model>,
    events: Vec<ExecutionEventRecord>,
    /// Set once written, or once it could not be.
    outcome: Option<Result<(), EngineError>>,
}

/// Group commit of the records workers write, on SQLite, where one write
/// transaction runs at a time anyway. A writer that finds no write in
/// progress leads: it writes its batch together with every batch waiting,
/// in one transaction, then hands the lead to the first writer that arrived
/// meanwhile. So an idle engine writes at once, a busy one commits many
/// executions' changes together, and no writer waits for more than the
/// write before its own and its own. On PostgreSQL each record commits in
/// its own transaction, side by side with the others (measured: leading
/// writers in line there drained 656 one-step executions/s against 926).
#[derive(Clone, Default)]
pub struct Commits(Arc<std::sync::Mutex<Waiting>>);

#[derive(Default)]
struct Waiting {
    leading: bool,
    batches: std::collections::VecDeque<(Batch, oneshot::Sender<Answer>)>,
}

/// What a waiting writer is told.
enum Answer {
    /// Its batch, written or not, with why, in its outcome.
    Written(Batch),
    /// Its batch, not written yet: it leads the next write.
    Lead(Batch),
}

/// Batches written together at most.
const GROUP_MAX: usize = 64;

impl Commits {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `batch`, written (or not, with why) in its `outcome`.
    async fn submit(&self, state: &AppState, batch: Batch) -> Result<Batch, EngineError> {
        if state.db.get_database_backend() == DbBackend::Postgres {
            // PostgreSQL runs concurrent transactions side by side and
            // flushes their commits together itself: one writer leading
            // the others would only make them wait in line.
            let mut batch = batch;
            let written = write_in_one_statement(state, &mut batch).await;
            batch.outcome = Some(written);
            return Ok(batch);
        }
        let (sender, answer) = oneshot::channel();
        let leads = {
            let mut waiting = self.waiting();
            if waiting.leading {
                waiting.batches.push_back((batch, sender));
                None
            } else {
                waiting.leading = true;
                Some(batch)
            }
        };
        let mine = match leads {
            Some(batch) => batch,
            None => match answer.await {
                Ok(Answer::Written(batch)) => return Ok(batch),
                Ok(Answer::Lead(batch)) => batch,
                Err(_) => return Err(interrupted()),
            },
        };
        let lead = Lead(self);
        let (others, senders): (Vec<Batch>, Vec<oneshot::Sender<Answer>>) = {
            let mut waiting = self.waiting();
            let take = waiting.batches.len().min(GROUP_MAX - 1);
            waiting.batches.drain(..take).unzip()
        };
        let mut batches = Vec::with_capacity(others.len() + 1);
        batches.push(mine);
        batches.extend(others);
        write_group(state, &mut batches).await;
        let mut batches = batches.into_iter();
        let mine = batches.next().expect("the leader's batch is first");
        for (batch, sender) in batches.zip(senders) {
            // A writer that stopped waiting needs no answer.
            let _ = sender.send(Answer::Written(batch));
        }
        drop(lead);
        Ok(mine)
    }

    /// Passes the lead to the first writer still waiting, or ends it.
    fn hand_on(&self) {
        let mut waiting = self.waiting();
        while let Some((batch, sender)) = waiting.batches.pop_front() {
            if sender.send(Answer::Lead(batch)).is_ok() {
                return;
            }
        }
        waiting.leading = false;
    }
}

/// The lead of a group commit, handed on when the leader is done, or
/// stops mid-way (its group's writers are then told it was interrupted).
struct Lead<'a>(&'a Commits);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.0.hand_on();
    }
}

/// Writes a batch on PostgreSQL in one statement, committed on its own:
/// the execution row's update fenced by the lease, and (joined to it, so
/// only if it held) the step rows' update and the events' insert, as
/// data-modifying `WITH` queries. One round trip instead of a transaction's
/// five; no row back means the lease was lost.
async fn write_in_one_statement(state: &AppState, batch: &mut Batch) -> Result<(), EngineError> {
    let mut params = Params::new(DbBackend::Postgres);
    let execution = owned_columns(batch.execution.clone().into_active_model());
    let set: Vec<String> = <execution::Column as sea_orm::Iterable>::iter()
        .filter_map(|column| match execution.get(column) {
            Set(value) => Some(format!(
                "{} = {}",
                sea_orm::IdenStatic::as_str(&column),
                params.one(value)
            )),
            _ => None,
        })
        .collect();
    let fence = format!(
        "UPDATE executions SET {} WHERE id = {} AND lease_owner = {} AND lease_epoch = {} RETURNING id",
        set.join(", "),
        params.one(batch.lease.execution_id.into()),
        params.one(batch.lease.owner.clone().into()),
        params.one(batch.lease.epoch.into()),
    );
    let mut with = vec![format!("fenced AS ({fence})")];
    if !batch.steps.is_empty() {
        let rows: Vec<String> = batch
            .steps
            .iter()
            .map(|s| params.row(step_row(s)))
            .collect();
        with.push(format!(
            "steps AS (UPDATE step_runs SET {} FROM (VALUES {}) AS v, fenced \
             WHERE step_runs.id = v.column1)",
            step_assignments(),
            rows.join(", ")
        ));
    }
    let mut rows = Vec::with_capacity(batch.events.len());
    for event in &batch.events {
        rows.push(params.row(event.row()?));
    }
    let columns = log::EVENT_COLUMNS;
    let picked: Vec<String> = (1..columns.len()).map(|n| format!("v.column{n}")).collect();
    with.push(format!(
        "events AS (INSERT INTO execution_events ({}) SELECT {}, {} FROM (VALUES {}) AS v, fenced \
         RETURNING seq, position)",
        columns.join(", "),
        picked.join(", "),
        watermark::position_of_this_write(DbBackend::Postgres),
        rows.join(", ")
    ));
    let sql = format!("WITH {} SELECT seq, position FROM events", with.join(", "));
    let written = state.db.query_all_raw(params.statement(sql)).await?;
    if written.is_empty() {
        return Err(EngineError::LeaseLost);
    }
    for row in &written {
        let seq: i32 = row.try_get("", "seq")?;
        let position: i64 = row.try_get("", "position")?;
        if let Some(event) = batch.events.iter_mut().find(|e| e.seq == seq) {
            event.position = position;
        }
    }
    Ok(())
}

/// The values of a raw statement, with the placeholder that names each.
struct Params {
    backend: DbBackend,
    values: Vec<sea_orm::Value>,
}

impl Params {
    fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            values: Vec::new(),
        }
    }

    /// The placeholder of `value`.
    fn one(&mut self, value: sea_orm::Value) -> String {
        self.values.push(value);
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => "?".to_owned(),
        }
    }

    /// `(…)`: a `VALUES` row of `values`' placeholders.
    fn row(&mut self, values: impl IntoIterator<Item = sea_orm::Value>) -> String {
        let placeholders: Vec<String> = values.into_iter().map(|v| self.one(v)).collect();
        format!("({})", placeholders.join(", "))
    }

    fn statement(self, sql: String) -> sea_orm::Statement {
        sea_orm::Statement::from_sql_and_values(self.backend, sql, self.values)
    }
}

/// Writes `batches` in one transaction; a batch whose lease was lost is
/// left out. When the transaction fails, each batch is written on its own,
/// so one the database refuses fails alone.
async fn write_group(state: &AppState, batches: &mut [Batch]) {
    if batches.len() > 1 {
        match write_together(state, batches).await {
            Ok(()) => return,
            Err(err) => {
                tracing::debug!(error = %err, batches = batches.len(), "a group commit failed; writing its batches one by one");
            }
        }
    }
    for batch in batches.iter_mut() {
        let written = write_together(state, std::slice::from_mut(batch)).await;
        if let Err(err) = written {
            batch.outcome = Some(Err(err));
        }
    }
}

/// One transaction for `batches`: each execution row fenced by its lease,
/// then the steps and the events of each that held.
/// Sets each batch's outcome when it commits.
async fn write_together(state: &AppState, batches: &mut [Batch]) -> Result<(), EngineError> {
    let txn = begin_write(&state.db).await?;
    let mut held = Vec::with_capacity(batches.len());
    for batch in batches.iter() {
        let fenced = execution::Entity::update_many()
            .set(owned_columns(batch.execution.clone().into_active_model()))
            .filter(execution::Column::Id.eq(batch.lease.execution_id))
            .filter(execution::Column::LeaseOwner.eq(batch.lease.owner.as_str()))
            .filter(execution::Column::LeaseEpoch.eq(batch.lease.epoch))
            .exec(&txn)
            .await?;
        held.push(fenced.rows_affected == 1);
    }
    // Each batch's steps and events in statements of their own: a
    // statement's shape then depends on its workflow, not on how many
    // batches met, so the database's prepared statements and plans serve
    // again (one statement over many executions' rows plans worse).
    for (batch, held) in batches.iter_mut().zip(&held) {
        if *held {
            write_steps(&txn, &batch.steps).await?;
            log::write(&txn, &mut batch.events).await?;
        }
    }
    txn.commit().await?;
    for (batch, held) in batches.iter_mut().zip(held) {
        batch.outcome = Some(if held {
            Ok(())
        } else {
            Err(EngineError::LeaseLost)
        });
    }
    Ok(())
}

/// RUNNING executions whose lease expired before `now`, oldest first.
pub async fn expired_leases(state: &AppState, limit: u64) -> Result<Vec<Uuid>, EngineError> {
    let now = state.clock.now();
    let expired = execution::Entity::find()
        .filter(execution::Column::Status.eq(ExecutionStatus::Running))
        .filter(execution::Column::LeaseExpiresAt.lt(now))
        .order_by_asc(execution::Column::LeaseExpiresAt)
        .limit(limit)
        .all(&state.db)
        .await?;
    Ok(expired.into_iter().map(|e| e.id).collect())
}

/// Requeues an execution whose worker was lost: its running steps become
/// RETRYING (they run again, at least once) and the execution goes back to
/// QUEUED with its lease cleared, all in one transaction. Applies only if
/// the lease is still expired when the row is locked, so a worker that
/// renewed in time keeps it; a worker that did not finds its lease gone.
/// Returns whether the execution was requeued.
pub async fn requeue_expired(state: &AppState, execution_id: Uuid) -> Result<bool, EngineError> {
    let txn = begin_write(&state.db).await?;
    let Some(execution) = locked_execution(&txn, execution_id).await? else {
        return Ok(false);
    };
    // Timestamps are taken once the row is ours, so they order like commits.
    let now = state.clock.now();
    let expired = execution.status == ExecutionStatus::Running
        && execution.lease_expires_at.is_some_and(|at| at < now);
    if !expired {
        return Ok(false);
    }
    let requeue = ExecutionChange::Requeue(RequeueReason::LeaseExpired);
    let lost = Some("its worker was lost; it will run again");
    let (_, events) = settle(
        &txn,
        execution,
        &[StepStatus::Running],
        StepStatus::Retrying,
        lost,
        requeue,
        ExecutionUpdate::default(),
        now,
    )
    .await?;
    txn.commit().await?;
    announce(state, events, Wake::Workers).await;
    Ok(true)
}

/// Fails an execution claimed too many times without progress: its
/// unfinished steps end CANCELLED and the execution FAILED with `error`.
pub async fn fail_without_progress(
    state: &AppState,
    lease: &Lease,
    error: String,
) -> Result<(), EngineError> {
    let txn = begin_write(&state.db).await?;
    let execution = fenced_execution(&txn, lease).await?;
    let now = state.clock.now();
    let update = ExecutionUpdate {
        error: Some(error),
        ..ExecutionUpdate::default()
    };
    let unfinished = [
        StepStatus::Pending,
        StepStatus::Running,
        StepStatus::Retrying,
    ];
    let (_, events) = settle(
        &txn,
        execution,
        &unfinished,
        StepStatus::Cancelled,
        None,
        ExecutionChange::To(ExecutionStatus::Failed),
        update,
        now,
    )
    .await?;
    txn.commit().await?;
    announce(state, events, Wake::Nobody).await;
    Ok(())
}

/// QUEUED executions (parked, or waiting for a worker) whose timeout passed.
pub async fn overdue_queued(state: &AppState, limit: u64) -> Result<Vec<Uuid>, EngineError> {
    let now = state.clock.now();
    let overdue = execution::Entity::find()
        .filter(execution::Column::Status.eq(ExecutionStatus::Queued))
        .filter(execution::Column::TimeoutAt.lt(now))
        .order_by_asc(execution::Column::TimeoutAt)
        .limit(limit)
        .all(&state.db)
        .await?;
    Ok(overdue.into_iter().map(|e| e.id).collect())
}

/// Ends a QUEUED execution whose timeout passed as TIMED_OUT, its unfinished
/// steps CANCELLED; applies only if it is still queued and overdue once
/// locked. Returns whether it timed out.
pub async fn time_out_queued(state: &AppState, execution_id: Uuid) -> Result<bool, EngineError> {
    let txn = begin_write(&state.db).await?;
    let Some(execution) = locked_execution(&txn, execution_id).await? else {
        return Ok(false);
    };
    // Timestamps are taken once the row is ours, so they order like commits.
    let now = state.clock.now();
    let overdue = execution.status == ExecutionStatus::Queued
        && execution.timeout_at.is_some_and(|at| at < now);
    if !overdue {
        return Ok(false);
    }
    let update = ExecutionUpdate {
        error: Some(timeout_error(execution.timeout_ms)),
        ..ExecutionUpdate::default()
    };
    let time_out = ExecutionChange::To(ExecutionStatus::TimedOut);
    let unfinished = [StepStatus::Pending, StepStatus::Retrying];
    let (_, events) = settle(
        &txn,
        execution,
        &unfinished,
        StepStatus::Cancelled,
        None,
        time_out,
        update,
        now,
    )
    .await?;
    txn.commit().await?;
    announce(state, events, Wake::Nobody).await;
    Ok(true)
}

/// The error of an execution that ran out of time.
pub fn timeout_error(timeout_ms: Option<i64>) -> String {
    match timeout_ms {
        Some(ms) => format!("the execution timed out after {ms} ms"),
        None => "the execution timed out".to_owned(),
    }
}

/// Moves every step of the (locked) execution whose status is in `from` to
/// `to`, in definition order, then applies `change` to the execution; returns
/// it with the events to publish once the transaction commits.
#[allow(clippy::too_many_arguments)]
async fn settle(
    txn: &DatabaseTransaction,
    mut execution: execution::Model,
    from: &[StepStatus],
    to: StepStatus,
    step_error: Option<&str>,
    change: ExecutionChange,
    update: ExecutionUpdate,
    now: DateTime<Utc>,
) -> Result<(execution::Model, Vec<ExecutionEventRecord>), EngineError> {
    let steps = step_run::Entity::find()
        .filter(step_run::Column::ExecutionId.eq(execution.id))
        .filter(step_run::Column::Status.is_in(from.iter().copied()))
        .order_by_asc(step_run::Column::Position)
        .all(txn)
        .await?;
    let mut events = Vec::with_capacity(steps.len() + 1);
    for step in steps {
        let step_update = StepUpdate {
            error: step_error.map(str::to_owned),
            ..StepUpdate::default()
        };
        let (updated, _, event) =
            apply_step_change(txn, execution, &step.step_id, to, step_update, now).await?;
        execution = updated;
        events.push(event);
    }
    let (execution, event) = apply_execution_change(txn, execution, change, update, now).await?;
    events.push(event);
    Ok((execution, events))
}

/// Moves a step of the (locked) execution to `to` and appends its event.
async fn apply_step_change(
    txn: &DatabaseTransaction,
    execution: execution::Model,
    step_id: &str,
    to: StepStatus,
    update: StepUpdate,
    now: DateTime<Utc>,
) -> Result<(execution::Model, step_run::Model, ExecutionEventRecord), EngineError> {
    let step = step_run::Entity::find()
        .filter(step_run::Column::ExecutionId.eq(execution.id))
        .filter(step_run::Column::StepId.eq(step_id))
        .one(txn)
        .await?
        .ok_or_else(|| {
            DbErr::RecordNotFound(format!("step run {step_id} of execution {}", execution.id))
        })?;
    let (step, progressed) = step_after(step, to, update, now)?;
    write_step(txn, &step).await?;
    let execution = bump_seq(txn, execution, now, progressed).await?;
    let kind = step_event(step.status)?;
    let event = log::append(txn, &execution, kind, Some(StepSnapshot::from(&step)), now).await?;
    Ok((execution, step, event))
}

/// The step row after a change to `to`, as the transition rules allow it,
/// and whether the change is progress (an outcome, not a start nor a lost
/// worker's step going back), which starts the count of fruitless claims
/// over.
fn step_after(
    step: step_run::Model,
    to: StepStatus,
    update: StepUpdate,
    now: DateTime<Utc>,
) -> Result<(step_run::Model, bool), IllegalTransition> {
    let status = step_transition(step.status, to)?;
    let mut step = step;
    if status == StepStatus::Running {
        step.attempt += 1;
        step.started_at = Some(now);
        step.input = update.input;
        step.output = None;
        step.error = None;
    } else {
        if update.input.is_some() {
            step.input = update.input;
        }
        if update.output.is_some() {
            step.output = update.output;
        }
        if update.error.is_some() {
            step.error = update.error;
        }
    }
    step.status = status;
    step.failed_attempts += i32::from(update.failed);
    step.next_retry_at = if status == StepStatus::Retrying {
        update.next_retry_at
    } else {
        None
    };
    if status.is_terminal() {
        step.finished_at = Some(now);
    }
    step.updated_at = now;
    let progressed = status.is_terminal() || (status == StepStatus::Retrying && update.failed);
    Ok((step, progressed))
}

/// The event a step emits on entering `status`.
fn step_event(status: StepStatus) -> Result<EventKind, DbErr> {
    EventKind::for_step(status)
        .ok_or_else(|| DbErr::Custom("a step never returns to PENDING".into()))
}

/// Writes a step row as it is now (only the execution's lease holder
/// changes its steps, under the execution row's lock).
async fn write_step(txn: &DatabaseTransaction, step: &step_run::Model) -> Result<(), DbErr> {
    let written = step_run::Entity::update_many()
        .set(step.clone().into_active_model().reset_all())
        .filter(step_run::Column::Id.eq(step.id))
        .exec(txn)
        .await?;
    if written.rows_affected == 1 {
        Ok(())
    } else {
        Err(DbErr::RecordNotFound(format!(
            "step run {} of execution {}",
            step.step_id, step.execution_id
        )))
    }
}

/// Writes several step rows as they are now, in one statement
/// (`UPDATE … FROM (VALUES …)`, which both backends read alike).
async fn write_steps(txn: &DatabaseTransaction, steps: &[step_run::Model]) -> Result<(), DbErr> {
    match steps {
        [] => return Ok(()),
        [step] => return write_step(txn, step).await,
        _ => {}
    }
    let mut params = Params::new(txn.get_database_backend());
    let rows: Vec<String> = steps.iter().map(|s| params.row(step_row(s))).collect();
    let sql = format!(
        "UPDATE step_runs SET {} FROM (VALUES {}) AS v WHERE step_runs.id = v.column1",
        step_assignments(),
        rows.join(", ")
    );
    let written = txn.execute_raw(params.statement(sql)).await?;
    if written.rows_affected() == steps.len() as u64 {
        Ok(())
    } else {
        Err(DbErr::RecordNotFound(format!(
            "{} of {} step runs of execution {}",
            steps.len() as u64 - written.rows_affected(),
            steps.len(),
            steps[0].execution_id
        )))
    }
}

/// The step run columns a change writes, after `id` (see [`step_row`]).
const STEP_COLUMNS: [&str; 10] = [
    "status",
    "attempt",
    "failed_attempts",
    "input",
    "output",
    "error",
    "next_retry_at",
    "started_at",
    "finished_at",
    "updated_at",
];

/// A step row's id, then its [`STEP_COLUMNS`], for a `VALUES` row.
fn step_row(step: &step_run::Model) -> [sea_orm::Value; 11] {
    [
        step.id.into(),
        sea_orm::ActiveEnum::to_value(&step.status).into(),
        step.attempt.into(),
        step.failed_attempts.into(),
        step.input.clone().into(),
        step.output.clone().into(),
        step.error.clone().into(),
        step.next_retry_at.into(),
        step.started_at.into(),
        step.finished_at.into(),
        step.updated_at.into(),
    ]
}

/// `status = v.column2, …`: the step columns set from a `VALUES` row.
fn step_assignments() -> String {
    let set: Vec<String> = STEP_COLUMNS
        .iter()
        .enumerate()
        .map(|(n, column)| format!("{column} = v.column{}", n + 2))
        .collect();
    set.join(", ")
}

/// Changes the (locked) execution's status and appends its event. A
/// terminal status or a requeue releases the lease.
async fn apply_execution_change(
    txn: &DatabaseTransaction,
    execution: execution::Model,
    change: ExecutionChange,
    update: ExecutionUpdate,
    now: DateTime<Utc>,
) -> Result<(execution::Model, ExecutionEventRecord), EngineError> {
    let execution = execution_after(execution, change, update, now)?;
    let execution = execution.into_active_model();
    let execution = owned_columns(execution).update(txn).await?;
    let event = log::append(
        txn,
        &execution,
        EventKind::for_execution(execution.status),
        None,
        now,
    )
    .await?;
    Ok((execution, event))
}

/// The execution row after `change`, as the transition rules allow it, with
/// its next event's seq allocated. A terminal status or a requeue releases
/// the lease.
fn execution_after(
    execution: execution::Model,
    change: ExecutionChange,
    update: ExecutionUpdate,
    now: DateTime<Utc>,
) -> Result<execution::Model, IllegalTransition> {
    let status = execution_transition(execution.status, change)?;
    let mut execution = execution;
    // A park or a hand-back at shutdown is not a failed claim: it does not
    // count towards the limit.
    if matches!(
        change,
        ExecutionChange::Requeue(RequeueReason::Parked | RequeueReason::HandedBack)
    ) {
        execution.claims_without_progress = (execution.claims_without_progress - 1).max(0);
    }
    execution.status = status;
    execution.last_event_seq = next_seq(execution.last_event_seq);
    execution.updated_at = now;
    if status.is_terminal() {
        execution.finished_at = Some(now);
    }
    if status.is_terminal() || status == ExecutionStatus::Queued {
        execution.lease_owner = None;
        execution.lease_expires_at = None;
    }
    if update.output.is_some() {
        execution.output = update.output;
    }
    if update.error.is_some() {
        execution.error = update.error;
    }
    if update.run_after.is_some() {
        execution.run_after = update.run_after;
    }
    Ok(execution)
}

/// The columns of an execution its changes write, marked to be written:
/// not `cancel_requested` nor a running lease's expiry, which others set
/// while a worker holds the lease.
fn owned_columns(mut execution: execution::ActiveModel) -> execution::ActiveModel {
    use execution::Column;
    for column in [
        Column::Status,
        Column::LastEventSeq,
        Column::UpdatedAt,
        Column::FinishedAt,
        Column::Output,
        Column::Error,
        Column::RunAfter,
        Column::ClaimsWithoutProgress,
    ] {
        execution.reset(column);
    }
    if execution.lease_owner.as_ref().is_none() {
        execution.reset(Column::LeaseOwner);
        execution.reset(Column::LeaseExpiresAt);
    }
    execution
}

/// The execution row, locked for this transaction on PostgreSQL (SQLite's
/// write transaction is exclusive already).
async fn locked_execution(
    txn: &DatabaseTransaction,
    execution_id: Uuid,
) -> Result<Option<execution::Model>, DbErr> {
    locked(execution::Entity::find_by_id(execution_id), txn)
        .one(txn)
        .await
}

/// The locked execution row, if `lease` still holds it.
async fn fenced_execution(
    txn: &DatabaseTransaction,
    lease: &Lease,
) -> Result<execution::Model, EngineError> {
    let execution = locked_execution(txn, lease.execution_id)
        .await?
        .ok_or(EngineError::LeaseLost)?;
    if holds(&execution, lease) {
        Ok(execution)
    } else {
        Err(EngineError::LeaseLost)
    }
}

/// Whether `lease` still holds `execution`.
fn holds(execution: &execution::Model, lease: &Lease) -> bool {
    execution.lease_owner.as_deref() == Some(lease.owner.as_str())
        && execution.lease_epoch == lease.epoch
}

/// Allocates the next event seq on the (locked) execution row, and clears
/// its count of fruitless claims when the change is progress.
async fn bump_seq(
    txn: &DatabaseTransaction,
    execution: execution::Model,
    now: DateTime<Utc>,
    progressed: bool,
) -> Result<execution::Model, DbErr> {
    let mut active = execution.into_active_model();
    if progressed {
        active.claims_without_progress = Set(0);
    }
    allocate_seq(&mut active);
    active.updated_at = Set(now);
    active.update(txn).await
}

/// The one place an event's seq is allocated: the next after the
/// execution's last (1 for a new execution), set on the row that the same
/// transaction updates (or inserts) and locks.
fn allocate_seq(execution: &mut execution::ActiveModel) -> i32 {
    let seq = match &execution.last_event_seq {
        Set(last) | Unchanged(last) => next_seq(*last),
        NotSet => 1,
    };
    execution.last_event_seq = Set(seq);
    seq
}

/// The seq after `last`.
fn next_seq(last: i32) -> i32 {
    last + 1
}

/// [`next_seq`] as SQL, for a statement that allocates on the row it
/// updates without reading it first (`SET last_event_seq = …`).
const NEXT_SEQ_SQL: &str = "last_event_seq + 1";

/// Whether a committed change made work claimable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// An execution is queued: idle workers should claim now.
    Workers,
    Nobody,
}

impl Wake {
    /// Workers, for an execution back in the queue and claimable now (not
    /// one parked until later).
    fn when_queued(execution: &execution::Model) -> Self {
        let due = execution
            .run_after
            .is_none_or(|at| at <= execution.updated_at);
        if execution.status == ExecutionStatus::Queued && due {
            Self::Workers
        } else {
            Self::Nobody
        }
    }
}

/// The one place committed changes are published: each event to its
/// organization's topic, in order, then the worker wake-up if any.
async fn announce(state: &AppState, events: Vec<ExecutionEventRecord>, wake: Wake) {
    for event in events {
        let topic = Topic::Organization(event.execution.organization_id);
        state
            .bus
            .publish(topic, BusMessage::ExecutionEvent(Box::new(event)))
            .await;
    }
    if wake == Wake::Workers {
        state
            .bus
            .publish(Topic::Control, BusMessage::WorkerWakeup)
            .await;
    }
}
