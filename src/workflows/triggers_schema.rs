//! GraphQL for triggers: schedules and webhooks that start a workflow.
//! Thin: parse input, call `triggers`, convert.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};

use crate::graphql::scalars::Json;
use chrono::{DateTime, Utc};
use entity::role::Role;
use entity::trigger;

use super::schema::{Workflow, load_workflow};
use super::triggers::{self, MemberTrigger, NewSchedule, Schedule};
use crate::graphql::context::{RequestContext, parse_id};
use crate::orgs::members_schema::{UserSummary, user_summary};

/// What starts an execution.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerKind {
    /// `runWorkflow` or `retryExecution`, by a person or an API key.
    Manual,
    /// A cron schedule.
    Schedule,
    /// A POST to a webhook URL.
    Webhook,
}

impl TriggerKind {
    /// The kind a stored name stands for; unknown names read as MANUAL.
    pub fn from_stored(stored: &str) -> Self {
        match triggers::TriggerKind::from_stored(stored) {
            Ok(triggers::TriggerKind::Schedule) => Self::Schedule,
            Ok(triggers::TriggerKind::Webhook) => Self::Webhook,
            Err(_) => Self::Manual,
        }
    }
}

/// A schedule or a webhook that starts executions of its workflow.
pub struct Trigger(MemberTrigger);

impl From<MemberTrigger> for Trigger {
    fn from(found: MemberTrigger) -> Self {
        Self(found)
    }
}

impl Trigger {
    /// `trigger` as a member with `role` sees it.
    pub fn seen_as(trigger: trigger::Model, role: Role) -> async_graphql::Result<Self> {
        Ok(triggers::as_member(trigger, role)?.into())
    }
}

/// When a SCHEDULE trigger fires.
#[derive(SimpleObject)]
pub struct TriggerSchedule {
    /// The 5-field cron pattern.
    cron: String,
    /// The IANA time zone the pattern is read in.
    time_zone: String,
    /// The input of every execution it starts.
    input: Json,
    /// When it fires next; null while it is disabled, or if the pattern
    /// never matches again.
    next_run_at: Option<DateTime<Utc>>,
}

/// How a WEBHOOK trigger is called.
#[derive(SimpleObject)]
pub struct TriggerWebhook {
    /// The first characters of its token, to tell webhooks apart; the full
    /// URL is shown only when the webhook is created.
    token_prefix: String,
}

/// A schedule or a webhook that starts executions of its workflow.
#[Object]
impl Trigger {
    /// The trigger's id.
    pub async fn id(&self) -> ID {
        ID(self.0.trigger.id.to_string())
    }

    /// SCHEDULE or WEBHOOK.
    async fn kind(&self) -> TriggerKind {
        TriggerKind::from_stored(&self.0.trigger.kind)
    }

    /// A disabled trigger starts nothing.
    async fn enabled(&self) -> bool {
        self.0.trigger.enabled
    }

    /// The schedule of a SCHEDULE trigger; null for a webhook.
    async fn schedule(&self) -> Option<TriggerSchedule> {
        let found = &self.0.trigger;
        Some(TriggerSchedule {
            cron: found.cron.clone()?,
            time_zone: found.time_zone.clone()?,
            input: Json(found.input.clone().unwrap_or_else(|| serde_json::json!({}))),
            next_run_at: found.next_run_at,
        })
    }

    /// The webhook of a WEBHOOK trigger; null for a schedule.
    async fn webhook(&self) -> Option<TriggerWebhook> {
        Some(TriggerWebhook {
            token_prefix: self.0.trigger.token_prefix.clone()?,
        })
    }

    /// When it last started an execution.
    async fn last_fired_at(&self) -> Option<DateTime<Utc>> {
        self.0.trigger.last_fired_at
    }

    /// The workflow it starts.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        load_workflow(ctx, self.0.trigger.workflow_id, self.0.role).await
    }

    /// Who made it; null when an API key did, or once their account is gone.
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UserSummary>> {
        user_summary(ctx, self.0.trigger.created_by).await
    }

    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.trigger.created_at
    }
}

/// A new schedule.
#[derive(InputObject)]
pub struct CreateScheduleTriggerInput {
    /// The workflow to start.
    pub workflow_id: ID,
    /// Standard 5 fields: minute, hour, day of month, month, day of week
    /// (`*/15 9-17 * * MON-FRI`); `@hourly`, `@daily` and the like too.
    pub cron: String,
    /// An IANA time zone name such as `Europe/Berlin`; across a daylight
    /// saving change, a time that is skipped runs at the end of the gap and
    /// a time that repeats runs once.
    #[graphql(default_with = "String::from(\"UTC\")")]
    pub time_zone: String,
    /// The input of every execution it starts.
    pub input: Option<Json>,
    /// Whether it fires; true when left out.
    #[graphql(default = true)]
    pub enabled: bool,
}

/// A new webhook.
#[derive(InputObject)]
pub struct CreateWebhookTriggerInput {
    /// The workflow to start.
    pub workflow_id: ID,
    /// Whether calls to it start executions; true when left out.
    #[graphql(default = true)]
    pub enabled: bool,
}

/// A webhook and its secret URL, which is shown only here.
#[derive(SimpleObject)]
pub struct CreateWebhookTriggerPayload {
    /// The new trigger.
    trigger: Trigger,
    /// `<public URL>/hooks/<token>`: POST a JSON body to it to start an
    /// execution with that input. Keep it secret; it is not shown again.
    url: String,
    /// The same as a path: `/hooks/<token>`.
    path: String,
}

/// Turns a trigger on or off.
#[derive(InputObject)]
pub struct SetTriggerEnabledInput {
    /// The trigger.
    pub trigger_id: ID,
    /// True to turn it on, false to turn it off.
    pub enabled: bool,
}

/// The trigger to delete.
#[derive(InputObject)]
pub struct DeleteTriggerInput {
    /// The trigger to delete.
    pub trigger_id: ID,
}

/// What `deleteTrigger` removed.
#[derive(SimpleObject)]
pub struct DeleteTriggerPayload {
    /// The id the deleted trigger had.
    trigger_id: ID,
    /// The workflow it belonged to.
    workflow: Workflow,
}

#[derive(Default)]
pub struct TriggerMutation;

#[Object]
impl TriggerMutation {
    /// Adds a schedule that starts the workflow's active version. EDITOR and
    /// up; a workflow has at most 20 triggers.
    async fn create_schedule_trigger(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow and its schedule.")] input: CreateScheduleTriggerInput,
    ) -> async_graphql::Result<Trigger> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let new = NewSchedule {
            workflow_id: parse_id(&input.workflow_id, "workflowId")?,
            schedule: Schedule::parse(&input.cron, &input.time_zone, "cron", "timeZone")?,
            input: input
                .input
                .map_or_else(|| serde_json::json!({}), |json| json.0),
            enabled: input.enabled,
        };
        Ok(triggers::create_schedule(&request.state, actor, new)
            .await?
            .into())
    }

    /// Adds a webhook and returns its secret URL, once. EDITOR and up; a
    /// workflow has at most 20 triggers.
    async fn create_webhook_trigger(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow the webhook starts.")] input: CreateWebhookTriggerInput,
    ) -> async_graphql::Result<CreateWebhookTriggerPayload> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let workflow_id = parse_id(&input.workflow_id, "workflowId")?;
        let created =
            triggers::create_webhook(&request.state, actor, workflow_id, input.enabled).await?;
        let path = format!("/hooks/{}", created.token);
        Ok(CreateWebhookTriggerPayload {
            trigger: created.trigger.into(),
            url: format!("{}{path}", request.state.config.settings.public_url),
            path,
        })
    }

    /// Turns a trigger on or off; a schedule turned on fires next at its
    /// next time from now. EDITOR and up.
    async fn set_trigger_enabled(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The trigger and whether it is on.")] input: SetTriggerEnabledInput,
    ) -> async_graphql::Result<Trigger> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let trigger_id = parse_id(&input.trigger_id, "triggerId")?;
        Ok(
            triggers::set_enabled(&request.state, actor, trigger_id, input.enabled)
                .await?
                .into(),
        )
    }

    /// Deletes a trigger; executions it started stay. EDITOR and up.
    async fn delete_trigger(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The trigger to delete.")] input: DeleteTriggerInput,
    ) -> async_graphql::Result<DeleteTriggerPayload> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let trigger_id = parse_id(&input.trigger_id, "triggerId")?;
        let deleted = triggers::delete(&request.state, actor, trigger_id).await?;
        Ok(DeleteTriggerPayload {
            trigger_id: ID(trigger_id.to_string()),
            workflow: load_workflow(ctx, deleted.trigger.workflow_id, deleted.role).await?,
        })
    }
}
