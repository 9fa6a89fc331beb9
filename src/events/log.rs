//! The durable execution event log (`execution_events`).
//!
//! Each event carries a snapshot of the execution's scalar fields and of
//! the step that changed, so streaming it to many subscribers needs no
//! further reads. `seq` is allocated by the writer of the change, in the
//! same transaction (see `engine::journal`); the event's `position` in commit
//! order is set by the database as it is written (see `watermark`).

use chrono::{DateTime, Utc};
use entity::execution_event;
use entity::status::{ExecutionStatus, StepStatus};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::watermark::{self, Watermark};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    ExecutionQueued,
    ExecutionStarted,
    ExecutionRequeued,
    ExecutionSucceeded,
    ExecutionFailed,
    ExecutionCancelled,
    ExecutionTimedOut,
    StepStarted,
    StepRetrying,
    StepSucceeded,
    StepFailed,
    StepSkipped,
    StepCancelled,
}

impl EventKind {
    /// The event an execution emits on entering `status`.
    pub fn for_execution(status: ExecutionStatus) -> Self {
        match status {
            ExecutionStatus::Queued => Self::ExecutionRequeued,
            ExecutionStatus::Running => Self::ExecutionStarted,
            ExecutionStatus::Succeeded => Self::ExecutionSucceeded,
            ExecutionStatus::Failed => Self::ExecutionFailed,
            ExecutionStatus::Cancelled => Self::ExecutionCancelled,
            ExecutionStatus::TimedOut => Self::ExecutionTimedOut,
        }
    }

    /// The event a step emits on entering `status`.
    pub fn for_step(status: StepStatus) -> Option<Self> {
        match status {
            StepStatus::Pending => None,
            StepStatus::Running => Some(Self::StepStarted),
            StepStatus::Retrying => Some(Self::StepRetrying),
            StepStatus::Succeeded => Some(Self::StepSucceeded),
            StepStatus::Failed => Some(Self::StepFailed),
            StepStatus::Skipped => Some(Self::StepSkipped),
            StepStatus::Cancelled => Some(Self::StepCancelled),
        }
    }

    /// The stored name, e.g. `STEP_STARTED`.
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// The execution's scalar fields as of an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionSnapshot {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub workflow_id: Uuid,
    pub status: ExecutionStatus,
    pub error: Option<String>,
    /// Present on the terminal event of a successful execution.
    pub output: Option<Value>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_event_seq: i32,
}

impl From<&entity::execution::Model> for ExecutionSnapshot {
    fn from(execution: &entity::execution::Model) -> Self {
        Self {
            id: execution.id,
            organization_id: execution.organization_id,
            workflow_id: execution.workflow_id,
            status: execution.status,
            error: execution.error.clone(),
            output: execution.output.clone(),
            queued_at: execution.queued_at,
            started_at: execution.started_at,
            finished_at: execution.finished_at,
            last_event_seq: execution.last_event_seq,
        }
    }
}

/// The changed step as of an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepSnapshot {
    pub step_id: String,
    pub status: StepStatus,
    pub attempt: i32,
    pub output: Option<Value>,
    pub error: Option<String>,
}

impl From<&entity::step_run::Model> for StepSnapshot {
    fn from(step: &entity::step_run::Model) -> Self {
        Self {
            step_id: step.step_id.clone(),
            status: step.status,
            attempt: step.attempt,
            output: step.output.clone(),
            error: step.error.clone(),
        }
    }
}

/// One event of the log, as stored, published and streamed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionEventRecord {
    pub seq: i32,
    /// Where the event stands in commit order (see `watermark`); 0 when
    /// unknown (a message from an instance that does not send it).
    #[serde(default)]
    pub position: i64,
    pub kind: EventKind,
    pub occurred_at: DateTime<Utc>,
    pub execution: ExecutionSnapshot,
    pub step: Option<StepSnapshot>,
}

impl ExecutionEventRecord {
    /// The event of a change to `execution`, as it is after the change (its
    /// `last_event_seq` names this event's seq); its position is known once
    /// it is written.
    pub fn of_change(
        execution: &entity::execution::Model,
        kind: EventKind,
        step: Option<StepSnapshot>,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        Self {
            seq: execution.last_event_seq,
            position: 0,
            kind,
            occurred_at,
            execution: execution.into(),
            step,
        }
    }

    /// The event's stored columns but its position, in the order of
    /// [`EVENT_COLUMNS`]: a new id, its execution's ids, seq, kind, payload
    /// and time.
    pub fn row(&self) -> Result<[sea_orm::Value; 8], DbErr> {
        let payload = serde_json::to_value(StoredPayload {
            execution: self.execution.clone(),
            step: self.step.clone(),
        })
        .map_err(|e| DbErr::Custom(format!("event payload: {e}")))?;
        Ok([
            Uuid::now_v7().into(),
            self.execution.id.into(),
            self.execution.organization_id.into(),
            self.execution.workflow_id.into(),
            self.seq.into(),
            self.kind.as_str().into(),
            payload.into(),
            self.occurred_at.into(),
        ])
    }

    /// Whether this is the execution's last event.
    pub fn is_terminal(&self) -> bool {
        self.execution.status.is_terminal() && self.step.is_none()
    }
}

/// The columns of [`ExecutionEventRecord::row`], then `position`.
pub const EVENT_COLUMNS: [&str; 9] = [
    "id",
    "execution_id",
    "organization_id",
    "workflow_id",
    "seq",
    "kind",
    "payload",
    "occurred_at",
    "position",
];

/// The stored payload of an event without a step, as PostgreSQL builds it
/// from `row`, an `executions` row as it is after the change: the JSON
/// [`ExecutionEventRecord::row`] writes, each [`ExecutionSnapshot`] field
/// read from the column of its name.
pub fn execution_payload_sql(row: &str) -> String {
    const SNAPSHOT_FIELDS: [&str; 10] = [
        "id",
        "organization_id",
        "workflow_id",
        "status",
        "error",
        "output",
        "queued_at",
        "started_at",
        "finished_at",
        "last_event_seq",
    ];
    let fields: Vec<String> = SNAPSHOT_FIELDS
        .iter()
        .map(|field| format!("'{field}', {row}.{field}"))
        .collect();
    format!(
        "jsonb_build_object('execution', jsonb_build_object({}), 'step', NULL::jsonb)",
        fields.join(", ")
    )
}

#[derive(Serialize, Deserialize)]
struct StoredPayload {
    execution: ExecutionSnapshot,
    step: Option<StepSnapshot>,
}

/// Appends an event for `execution` as it is after the change (its
/// `last_event_seq` already names this event's seq).
pub async fn append(
    conn: &impl ConnectionTrait,
    execution: &entity::execution::Model,
    kind: EventKind,
    step: Option<StepSnapshot>,
    occurred_at: DateTime<Utc>,
) -> Result<ExecutionEventRecord, DbErr> {
    let mut records = [ExecutionEventRecord::of_change(
        execution,
        kind,
        step,
        occurred_at,
    )];
    write(conn, &mut records).await?;
    let [record] = records;
    Ok(record)
}

/// Writes `records` in one statement, and sets the position the database
/// gave each.
pub async fn write(
    conn: &impl ConnectionTrait,
    records: &mut [ExecutionEventRecord],
) -> Result<(), DbErr> {
    if records.is_empty() {
        return Ok(());
    }
    use execution_event::Column;
    let mut insert = Query::insert();
    insert
        .into_table(execution_event::Entity)
        .columns(EVENT_COLUMNS.map(sea_orm::sea_query::Alias::new));
    let position = watermark::position_of_this_write(conn.get_database_backend());
    for record in records.iter() {
        let mut row: Vec<sea_orm::sea_query::SimpleExpr> =
            record.row()?.into_iter().map(Into::into).collect();
        row.push(Expr::cust(position));
        insert.values_panic(row);
    }
    insert.returning(Query::returning().columns([
        Column::ExecutionId,
        Column::Seq,
        Column::Position,
    ]));
    let written = conn.query_all(&insert).await?;
    if written.len() != records.len() {
        return Err(DbErr::Custom(format!(
            "{} events written, {} returned",
            records.len(),
            written.len()
        )));
    }
    for row in written {
        let execution_id: Uuid = row.try_get("", "execution_id")?;
        let seq: i32 = row.try_get("", "seq")?;
        let position: i64 = row.try_get("", "position")?;
        if let Some(record) = records
            .iter_mut()
            .find(|r| r.seq == seq && r.execution.id == execution_id)
        {
            record.position = position;
        }
    }
    Ok(())
}

/// Every event of `execution_id` with seq above `after_seq`, in order.
pub async fn events_after(
    conn: &impl ConnectionTrait,
    execution_id: Uuid,
    after_seq: i32,
) -> Result<Vec<ExecutionEventRecord>, DbErr> {
    let rows = execution_event::Entity::find()
        .filter(execution_event::Column::ExecutionId.eq(execution_id))
        .filter(execution_event::Column::Seq.gt(after_seq))
        .order_by_asc(execution_event::Column::Seq)
        .all(conn)
        .await?;
    rows.into_iter().map(decode).collect()
}

/// Where one logged event stands.
#[derive(Clone, Copy, Debug)]
pub struct LoggedPosition {
    pub id: Uuid,
    pub execution_id: Uuid,
    pub seq: i32,
    pub position: i64,
}

/// The organization's events that `to` covers and `from` does not, of
/// these workflows' executions only unless the list is empty, at most
/// `limit + 1` of them (more than `limit` means too many to replay). Each
/// of its (at most two) queries is an index range or lookups bounded by
/// `limit`, whatever the watermarks say.
pub async fn committed_between(
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
    workflow_ids: &[Uuid],
    from: &Watermark,
    to: &Watermark,
    limit: u64,
) -> Result<Vec<LoggedPosition>, DbErr> {
    use execution_event::Column;
    let (from_first, from_below) = from.uncovered();
    let (to_first, to_below) = to.uncovered();
    let covered_by_to = || {
        execution_event::Entity::find()
            .select_only()
            .columns([
                Column::Id,
                Column::ExecutionId,
                Column::Seq,
                Column::Position,
            ])
            .filter(Column::OrganizationId.eq(organization_id))
            .filter(Column::Position.lt(to_first))
            .filter(Column::Position.is_not_in(to_below.iter().copied()))
            .apply_if(
                (!workflow_ids.is_empty()).then_some(workflow_ids),
                |query, ids| query.filter(Column::WorkflowId.is_in(ids.iter().copied())),
            )
            .order_by_asc(Column::Position)
            .limit(limit + 1)
    };
    let mut rows: Vec<(Uuid, Uuid, i32, i64)> = covered_by_to()
        .filter(Column::Position.gte(from_first))
        .into_tuple()
        .all(conn)
        .await?;
    if !from_below.is_empty() {
        let below: Vec<(Uuid, Uuid, i32, i64)> = covered_by_to()
            .filter(Column::Position.is_in(from_below.iter().copied()))
            .into_tuple()
            .all(conn)
            .await?;
        rows.extend(below);
    }
    Ok(rows
        .into_iter()
        .map(|(id, execution_id, seq, position)| LoggedPosition {
            id,
            execution_id,
            seq,
            position,
        })
        .collect())
}

/// The events with these ids, per execution in seq order.
pub async fn events_by_id(
    conn: &impl ConnectionTrait,
    ids: &[Uuid],
) -> Result<Vec<ExecutionEventRecord>, DbErr> {
    let mut events = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ID_BATCH) {
        let rows = execution_event::Entity::find()
            .filter(execution_event::Column::Id.is_in(chunk.iter().copied()))
            .order_by_asc(execution_event::Column::ExecutionId)
            .order_by_asc(execution_event::Column::Seq)
            .all(conn)
            .await?;
        for row in rows {
            events.push(decode(row)?);
        }
    }
    Ok(events)
}

/// Ids one query binds, well below every database's limit.
const ID_BATCH: usize = 1_000;

pub fn decode(row: execution_event::Model) -> Result<ExecutionEventRecord, DbErr> {
    let kind: EventKind = serde_json::from_value(Value::String(row.kind.clone()))
        .map_err(|e| DbErr::Custom(format!("unknown event kind {}: {e}", row.kind)))?;
    let payload: StoredPayload = serde_json::from_value(row.payload)
        .map_err(|e| DbErr::Custom(format!("event payload: {e}")))?;
    Ok(ExecutionEventRecord {
        seq: row.seq,
        position: row.position,
        kind,
        occurred_at: row.occurred_at,
        execution: payload.execution,
        step: payload.step,
    })
}
