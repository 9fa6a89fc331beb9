//! Triggers: what starts a workflow without a person.
//!
//! A SCHEDULE trigger fires at the times of a 5-field cron pattern read in an
//! IANA time zone (croner resolves daylight-saving gaps and repeats). Its
//! `next_run_at` is the claim: the scheduler on every instance fires a due
//! trigger only by moving that column forward from the value it read, in the
//! same transaction that queues the execution, so exactly one instance
//! fires each run. After downtime a trigger fires once and then moves to
//! its next time after now: at most one missed run is caught up.
//!
//! A WEBHOOK trigger has a secret token, shown once as the URL
//! `/hooks/{token}`; only its SHA-256 is stored, and a request's token is
//! found by its hash. A POST's JSON body becomes the execution's input.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use entity::role::Role;
use entity::{trigger, workflow};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::service as workflows;
use crate::auth::tokens::{hash_token, new_opaque_token};
use crate::db::{begin_write, locked};
use crate::engine::journal::{
    IdempotencyKey, NewExecution, Origin, Priority, announce_queued, enqueue, insert_queued,
};
use crate::error::{AppError, AppResult};
use crate::orgs::audit::{self, AuditAction, Target};
use crate::orgs::policy::{self, Action};
use crate::orgs::principal::Principal;
use crate::state::AppState;

/// Most triggers one workflow may have.
pub const MAX_TRIGGERS_PER_WORKFLOW: u64 = 20;
/// What every webhook token starts with, so a leaked one is recognisable.
const WEBHOOK_TOKEN_PREFIX: &str = "fph";
/// How many of a token's characters are kept to tell webhooks apart.
const DISPLAY_PREFIX_CHARS: usize = 10;
/// The longest cron pattern, in characters.
const MAX_CRON_CHARS: usize = 200;
/// Most due schedules one scheduler pass fires.
const BATCH: u64 = 100;

/// What kind of trigger started an execution, or a trigger is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerKind {
    Schedule,
    Webhook,
}

impl TriggerKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "SCHEDULE",
            Self::Webhook => "WEBHOOK",
        }
    }

    /// The kind a stored name stands for.
    pub fn from_stored(stored: &str) -> AppResult<Self> {
        match stored {
            "SCHEDULE" => Ok(Self::Schedule),
            "WEBHOOK" => Ok(Self::Webhook),
            other => Err(AppError::Internal(anyhow::anyhow!(
                "unknown trigger kind {other:?}"
            ))),
        }
    }
}

/// A cron pattern in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    pattern: String,
    zone: Tz,
}

impl Schedule {
    /// Parses a standard 5-field pattern (minute, hour, day of month, month,
    /// day of week; names such as `MON` and `JAN` and nicknames such as
    /// `@daily` allowed) and an IANA zone name.
    pub fn parse(
        pattern: &str,
        zone: &str,
        pattern_field: &str,
        zone_field: &str,
    ) -> AppResult<Self> {
        let pattern = pattern.trim();
        if pattern.chars().count() > MAX_CRON_CHARS {
            return Err(AppError::bad_input(
                pattern_field,
                format!("a cron pattern has at most {MAX_CRON_CHARS} characters"),
            ));
        }
        let five_fields = pattern.starts_with('@') || pattern.split_whitespace().count() == 5;
        if !five_fields {
            return Err(AppError::bad_input(
                pattern_field,
                "a cron pattern has 5 fields: minute, hour, day of month, month, day of week",
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|err| AppError::bad_input(pattern_field, format!("invalid cron: {err}")))?;
        let zone = Tz::from_str(zone.trim()).map_err(|_| {
            AppError::bad_input(
                zone_field,
                "not an IANA time zone name (such as Europe/Berlin or UTC)",
            )
        })?;
        Ok(Self {
            cron,
            pattern: pattern.to_owned(),
            zone,
        })
    }

    /// The schedule a stored SCHEDULE trigger holds.
    pub fn of(trigger: &trigger::Model) -> AppResult<Self> {
        let (Some(pattern), Some(zone)) = (&trigger.cron, &trigger.time_zone) else {
            return Err(AppError::Internal(anyhow::anyhow!(
                "schedule trigger {} has no cron or time zone",
                trigger.id
            )));
        };
        Self::parse(pattern, zone, "cron", "timeZone").map_err(|err| {
            AppError::Internal(anyhow::anyhow!(
                "schedule trigger {} is unreadable: {}",
                trigger.id,
                err.public_message()
            ))
        })
    }

    /// The first time strictly after `after` the pattern matches in the
    /// zone; `None` if it never matches again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }
}

/// A trigger as one member sees it.
#[derive(Clone, Debug)]
pub struct MemberTrigger {
    pub trigger: trigger::Model,
    pub role: Role,
}

/// A new SCHEDULE trigger.
pub struct NewSchedule {
    pub workflow_id: Uuid,
    pub schedule: Schedule,
    /// The input of every execution it starts.
    pub input: Value,
    pub enabled: bool,
}

/// A new WEBHOOK trigger and its token, which is shown only now.
pub struct CreatedWebhook {
    pub trigger: MemberTrigger,
    pub token: String,
}

/// Adds a schedule to a workflow. EDITOR and up.
pub async fn create_schedule(
    state: &AppState,
    actor: Principal,
    new: NewSchedule,
) -> AppResult<MemberTrigger> {
    let now = state.clock.now();
    let next_run_at = new
        .schedule
        .next_after(now)
        .ok_or_else(|| AppError::bad_input("cron", "the pattern never matches a future time"))?;
    let model = trigger::ActiveModel {
        kind: Set(TriggerKind::Schedule.as_str().to_owned()),
        enabled: Set(new.enabled),
        cron: Set(Some(new.schedule.pattern.clone())),
        time_zone: Set(Some(new.schedule.zone.name().to_owned())),
        input: Set(Some(new.input)),
        next_run_at: Set(Some(next_run_at).filter(|_| new.enabled)),
        token_prefix: Set(None),
        token_hash: Set(None),
        ..Default::default()
    };
    let details = json!({
        "kind": TriggerKind::Schedule.as_str(),
        "cron": new.schedule.pattern,
        "timeZone": new.schedule.zone.name(),
    });
    insert(state, actor, new.workflow_id, model, details).await
}

/// Adds a webhook to a workflow and returns its token, once. EDITOR and up.
pub async fn create_webhook(
    state: &AppState,
    actor: Principal,
    workflow_id: Uuid,
    enabled: bool,
) -> AppResult<CreatedWebhook> {
    let (token, token_hash) = new_opaque_token(WEBHOOK_TOKEN_PREFIX);
    let model = trigger::ActiveModel {
        kind: Set(TriggerKind::Webhook.as_str().to_owned()),
        enabled: Set(enabled),
        cron: Set(None),
        time_zone: Set(None),
        input: Set(None),
        next_run_at: Set(None),
        token_prefix: Set(Some(token.chars().take(DISPLAY_PREFIX_CHARS).collect())),
        token_hash: Set(Some(token_hash)),
        ..Default::default()
    };
    let details = json!({ "kind": TriggerKind::Webhook.as_str() });
    let trigger = insert(state, actor, workflow_id, model, details).await?;
    Ok(CreatedWebhook { trigger, token })
}

/// Inserts a trigger of the workflow under a lock on the workflow row, so
/// the per-workflow limit holds under concurrent requests.
async fn insert(
    state: &AppState,
    actor: Principal,
    workflow_id: Uuid,
    mut model: trigger::ActiveModel,
    mut details: Value,
) -> AppResult<MemberTrigger> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let workflow = locked(workflow::Entity::find_by_id(workflow_id), &txn)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    let role = actor
        .require_role_in(&txn, workflow.organization_id, "workflow")
        .await?;
    policy::authorize(role, Action::ManageTriggers)?;
    let existing = trigger::Entity::find()
        .filter(trigger::Column::WorkflowId.eq(workflow.id))
        .count(&txn)
        .await?;
    if existing >= MAX_TRIGGERS_PER_WORKFLOW {
        return Err(AppError::Conflict(format!(
            "a workflow has at most {MAX_TRIGGERS_PER_WORKFLOW} triggers: delete one first"
        )));
    }
    model.id = Set(Uuid::now_v7());
    model.organization_id = Set(workflow.organization_id);
    model.workflow_id = Set(workflow.id);
    model.last_fired_at = Set(None);
    model.created_by = Set(actor.user_id());
    model.created_at = Set(now);
    let trigger = model.insert(&txn).await?;
    details["workflowId"] = json!(workflow.id);
    audit::record(
        &txn,
        workflow.organization_id,
        actor,
        AuditAction::TriggerCreated,
        Target::Trigger(trigger.id),
        Some(details),
        now,
    )
    .await?;
    txn.commit().await?;
    tracing::info!(trigger_id = %trigger.id, workflow_id = %workflow.id, kind = %trigger.kind, "trigger created");
    Ok(MemberTrigger { trigger, role })
}

/// Turns a trigger on or off. A schedule turned on is due at its next time
/// after now: runs it missed while off are not caught up. EDITOR and up.
pub async fn set_enabled(
    state: &AppState,
    actor: Principal,
    trigger_id: Uuid,
    enabled: bool,
) -> AppResult<MemberTrigger> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let found = locked(trigger::Entity::find_by_id(trigger_id), &txn)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("trigger"))?;
    let role = actor
        .require_role_in(&txn, found.organization_id, "trigger")
        .await?;
    policy::authorize(role, Action::ManageTriggers)?;
    if found.enabled == enabled {
        return Ok(MemberTrigger {
            trigger: found,
            role,
        });
    }
    // A schedule switched off has no next run; switched on, its next run is
    // the next match from now.
    let next_run_at = match TriggerKind::from_stored(&found.kind)? {
        TriggerKind::Schedule if enabled => Schedule::of(&found)?.next_after(now),
        _ => None,
    };
    let mut change: trigger::ActiveModel = found.into();
    change.enabled = Set(enabled);
    change.next_run_at = Set(next_run_at);
    let trigger = change.update(&txn).await?;
    txn.commit().await?;
    tracing::info!(%trigger_id, enabled, "trigger switched");
    Ok(MemberTrigger { trigger, role })
}

/// Deletes a trigger; the executions it started stay, no longer linked to
/// it. EDITOR and up. Returns the trigger as it was.
pub async fn delete(
    state: &AppState,
    actor: Principal,
    trigger_id: Uuid,
) -> AppResult<MemberTrigger> {
    use entity::execution;

    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let found = locked(trigger::Entity::find_by_id(trigger_id), &txn)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("trigger"))?;
    let role = actor
        .require_role_in(&txn, found.organization_id, "trigger")
        .await?;
    policy::authorize(role, Action::ManageTriggers)?;
    execution::Entity::update_many()
        .col_expr(
            execution::Column::TriggerId,
            Expr::value(Option::<Uuid>::None),
        )
        .filter(execution::Column::TriggerId.eq(found.id))
        .exec(&txn)
        .await?;
    trigger::Entity::delete_by_id(found.id).exec(&txn).await?;
    audit::record(
        &txn,
        found.organization_id,
        actor,
        AuditAction::TriggerDeleted,
        Target::Trigger(found.id),
        Some(json!({ "kind": found.kind, "workflowId": found.workflow_id })),
        now,
    )
    .await?;
    txn.commit().await?;
    tracing::info!(%trigger_id, "trigger deleted");
    Ok(MemberTrigger {
        trigger: found,
        role,
    })
}

/// Each workflow's triggers, oldest first, in one query.
pub async fn by_workflow(
    db: &DatabaseConnection,
    workflow_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<trigger::Model>>, sea_orm::DbErr> {
    if workflow_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut grouped: HashMap<Uuid, Vec<trigger::Model>> = HashMap::new();
    for found in trigger::Entity::find()
        .filter(trigger::Column::WorkflowId.is_in(workflow_ids.iter().copied()))
        .order_by_asc(trigger::Column::CreatedAt)
        .order_by_asc(trigger::Column::Id)
        .all(db)
        .await?
    {
        grouped.entry(found.workflow_id).or_default().push(found);
    }
    Ok(grouped)
}

/// Triggers by id, in one query.
pub async fn triggers_by_id(
    db: &DatabaseConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, trigger::Model>, sea_orm::DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(trigger::Entity::find()
        .filter(trigger::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|found| (found.id, found))
        .collect())
}

/// Queues an execution of the webhook's workflow with `input`. NOT_FOUND for
/// an unknown token or a disabled webhook, CONFLICT for an archived
/// workflow. With an idempotency key, a repeated delivery within 24 hours
/// returns the first delivery's execution.
pub async fn fire_webhook(
    state: &AppState,
    token: &str,
    input: Value,
    idempotency_key: Option<IdempotencyKey>,
) -> AppResult<entity::execution::Model> {
    let found = trigger::Entity::find()
        .filter(trigger::Column::TokenHash.eq(hash_token(token)))
        .filter(trigger::Column::Kind.eq(TriggerKind::Webhook.as_str()))
        .filter(trigger::Column::Enabled.eq(true))
        .one(&state.db)
        .await?
        .ok_or(AppError::NotFound("webhook"))?;
    let workflow = workflow::Entity::find_by_id(found.workflow_id)
        .one(&state.db)
        .await?
        .ok_or(AppError::NotFound("webhook"))?;
    workflows::ensure_runnable(&workflow)?;
    let version_id = workflows::active_version_id(&workflow)?;
    let new = NewExecution {
        workflow: &workflow,
        version_id,
        input,
        priority: Priority::Normal,
        idempotency_key,
        created_by: None,
        retry_of_id: None,
        origin: Origin::Trigger {
            kind: TriggerKind::Webhook.as_str(),
            id: found.id,
        },
    };
    enqueue(state, new).await.map_err(|err| match err {
        // Switched off or deleted while this delivery was on its way.
        AppError::NotFound(_) => AppError::NotFound("webhook"),
        other => other,
    })
}

/// One scheduler pass: fires every enabled schedule due by now (up to a
/// batch). Returns how many executions it queued.
pub async fn fire_due(state: &AppState) -> AppResult<usize> {
    let now = state.clock.now();
    let due = trigger::Entity::find()
        .filter(trigger::Column::Enabled.eq(true))
        .filter(trigger::Column::Kind.eq(TriggerKind::Schedule.as_str()))
        .filter(trigger::Column::NextRunAt.lte(now))
        .order_by_asc(trigger::Column::NextRunAt)
        .limit(BATCH)
        .all(&state.db)
        .await?;
    let mut fired = 0;
    for found in due {
        let trigger_id = found.id;
        match fire_schedule(state, found, now).await {
            Ok(true) => fired += 1,
            Ok(false) => {}
            Err(err) => tracing::error!(%trigger_id, error = ?err, "firing a schedule failed"),
        }
    }
    Ok(fired)
}

/// Claims one due schedule by moving `next_run_at` on from the value read,
/// and queues its execution in the same transaction. False when another
/// instance claimed it first, or the workflow cannot run (archived): the
/// schedule still moves on.
async fn fire_schedule(
    state: &AppState,
    found: trigger::Model,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let Some(due_at) = found.next_run_at else {
        return Ok(false);
    };
    // The next time after now, not after `due_at`: runs missed while no
    // instance was up collapse into this one.
    let schedule = match Schedule::of(&found) {
        Ok(schedule) => Some(schedule),
        // Parked (no next run) rather than retried on every pass, where it
        // would hold a place in every batch of due schedules.
        Err(err) => {
            tracing::error!(trigger_id = %found.id, error = ?err, "a schedule cannot be read; it will not fire");
            None
        }
    };
    let next_run_at = schedule.as_ref().and_then(|s| s.next_after(now));
    let txn = begin_write(&state.db).await?;
    let claimed = trigger::Entity::update_many()
        .col_expr(trigger::Column::NextRunAt, Expr::value(next_run_at))
        .filter(trigger::Column::Id.eq(found.id))
        .filter(trigger::Column::Enabled.eq(true))
        .filter(trigger::Column::NextRunAt.eq(due_at))
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !claimed || schedule.is_none() {
        txn.commit().await?;
        return Ok(false);
    }
    let workflow = workflow::Entity::find_by_id(found.workflow_id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    if workflow.archived_at.is_some() {
        txn.commit().await?;
        tracing::info!(trigger_id = %found.id, workflow_id = %workflow.id, "schedule skipped: the workflow is archived");
        return Ok(false);
    }
    let queued = async {
        let new = NewExecution {
            workflow: &workflow,
            version_id: workflows::active_version_id(&workflow)?,
            input: found.input.clone().unwrap_or_else(|| json!({})),
            priority: Priority::Normal,
            idempotency_key: None,
            created_by: None,
            retry_of_id: None,
            origin: Origin::Trigger {
                kind: TriggerKind::Schedule.as_str(),
                id: found.id,
            },
        };
        insert_queued(&txn, new, now).await
    }
    .await;
    match queued {
        Ok(queued) => {
            txn.commit().await?;
            announce_queued(state, queued).await;
            tracing::info!(trigger_id = %found.id, %due_at, "schedule fired");
            Ok(true)
        }
        // This run is lost, but the schedule moves on rather than being
        // retried on every pass, where it would hold a place in every batch
        // of due schedules.
        Err(err) => {
            drop(txn);
            tracing::error!(trigger_id = %found.id, %due_at, error = ?err, "a due schedule could not start its execution; it moves on to its next time");
            trigger::Entity::update_many()
                .col_expr(trigger::Column::NextRunAt, Expr::value(next_run_at))
                .filter(trigger::Column::Id.eq(found.id))
                .filter(trigger::Column::NextRunAt.eq(due_at))
                .exec(&state.db)
                .await?;
            Ok(false)
        }
    }
}

/// The trigger as a member with `role` sees it, if the role may view it.
pub fn as_member(trigger: trigger::Model, role: Role) -> AppResult<MemberTrigger> {
    policy::authorize(role, Action::ViewWorkflow)?;
    Ok(MemberTrigger { trigger, role })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schedule(pattern: &str, zone: &str) -> Schedule {
        Schedule::parse(pattern, zone, "cron", "timeZone").expect("a valid schedule")
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn the_next_run_is_read_in_the_schedules_time_zone() {
        let daily = schedule("0 9 * * *", "Europe/Berlin");
        // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
        assert_eq!(
            daily.next_after(utc(2026, 1, 10, 12, 0)),
            Some(utc(2026, 1, 11, 8, 0))
        );
        assert_eq!(
            daily.next_after(utc(2026, 7, 10, 12, 0)),
            Some(utc(2026, 7, 11, 7, 0))
        );
    }

    #[test]
    fn the_next_run_is_strictly_after_the_given_time() {
        let hourly = schedule("0 * * * *", "UTC");
        assert_eq!(
            hourly.next_after(utc(2026, 3, 1, 10, 0)),
            Some(utc(2026, 3, 1, 11, 0))
        );
    }

    #[test]
    fn a_run_in_the_spring_forward_gap_runs_once_right_after_it() {
        // New York skips 02:00-03:00 on 2026-03-08: that night's 02:30 run
        // is at 03:00 EDT (07:00 UTC); the next night's 02:30 EDT is 06:30
        // UTC.
        let nightly = schedule("30 2 * * *", "America/New_York");
        let first = nightly.next_after(utc(2026, 3, 7, 12, 0)).unwrap();
        let second = nightly.next_after(first).unwrap();
        assert_eq!(first, utc(2026, 3, 8, 7, 0));
        assert_eq!(second, utc(2026, 3, 9, 6, 30));
    }

    #[test]
    fn a_run_in_the_fall_back_repeat_runs_once() {
        // New York repeats 01:00-02:00 on 2026-11-01.
        let nightly = schedule("30 1 * * *", "America/New_York");
        let first = nightly.next_after(utc(2026, 10, 31, 12, 0)).unwrap();
        let second = nightly.next_after(first).unwrap();
        // 01:30 EDT (05:30 UTC) only, then 01:30 EST the next night.
        assert_eq!(first, utc(2026, 11, 1, 5, 30));
        assert_eq!(second, utc(2026, 11, 2, 6, 30));
    }

    #[test]
    fn a_pattern_without_exactly_five_fields_is_refused() {
        for pattern in ["* * * *", "0 * * * * *", "0 0 * * * * 2030", ""] {
            let err = Schedule::parse(pattern, "UTC", "cron", "timeZone").unwrap_err();
            assert_eq!(err.code(), "BAD_USER_INPUT", "{pattern:?}");
        }
    }

    #[test]
    fn a_pattern_that_never_matches_has_no_next_run() {
        let never = schedule("0 0 30 2 *", "UTC");
        assert_eq!(never.next_after(utc(2026, 1, 1, 0, 0)), None);
    }

    #[test]
    fn a_malformed_pattern_or_unknown_zone_is_refused() {
        assert!(Schedule::parse("61 * * * *", "UTC", "cron", "timeZone").is_err());
        assert!(Schedule::parse("0 0 * * *", "Mars/Olympus", "cron", "timeZone").is_err());
        assert!(Schedule::parse("0 0 * * MON-FRI", "Asia/Tokyo", "cron", "timeZone").is_ok());
        assert!(Schedule::parse("@daily", "UTC", "cron", "timeZone").is_ok());
    }
}
