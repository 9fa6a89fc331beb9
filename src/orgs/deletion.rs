//! Deleting an organization: its unfinished executions are cancelled
//! through the engine first, so subscribers see each one end CANCELLED and
//! no runner is left writing to rows that are gone; then the organization
//! and everything it owns (workflows, versions, executions and their
//! events, memberships, invitations, API keys, the audit log) are deleted
//! in one statement through the foreign keys' cascades. Its keys' open
//! connections close and its members' subscriptions end.

use std::collections::HashSet;
use std::time::Duration;

use entity::execution;
use entity::status::ExecutionStatus;
use sea_orm::{ColumnTrait, EntityTrait, ModelTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::members::{announce_changed, lock_organization};
use super::policy::{self, Action};
use super::principal::Principal;
use crate::auth::api_keys;
use crate::db::begin_write;
use crate::engine::journal::{self, CancelOutcome};
use crate::error::AppResult;
use crate::state::AppState;

/// How long deletion waits for running executions to stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often it looks while waiting.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// What a deletion did.
#[derive(Debug)]
pub struct Deleted {
    pub organization_id: Uuid,
    /// Executions that were queued or running and were cancelled.
    pub cancelled_executions: usize,
}

/// Deletes an organization and everything it owns (OWNER only; NOT_FOUND
/// for outsiders). Unfinished executions are cancelled first; a runner
/// that does not stop within 10 s (its instance is gone, say) does not hold
/// the deletion up.
pub async fn delete_organization(
    state: &AppState,
    actor: Principal,
    organization_id: Uuid,
) -> AppResult<Deleted> {
    let role = actor
        .require_role_in(&state.db, organization_id, "organization")
        .await?;
    policy::authorize(role, Action::DeleteOrganization)?;
    let cancelled_executions = cancel_unfinished(state, organization_id).await?;

    let txn = begin_write(&state.db).await?;
    let organization = lock_organization(&txn, organization_id).await?;
    // The role may have changed while executions stopped.
    let role = actor
        .require_role_in(&txn, organization_id, "organization")
        .await?;
    policy::authorize(role, Action::DeleteOrganization)?;
    let key_ids = api_keys::ids_of_organization(&txn, organization_id).await?;
    organization.delete(&txn).await?;
    txn.commit().await?;

    api_keys::announce_revoked(state, key_ids).await;
    announce_changed(state, organization_id).await;
    tracing::info!(%organization_id, cancelled_executions, "organization deleted");
    Ok(Deleted {
        organization_id,
        cancelled_executions,
    })
}

/// Cancels every queued and running execution of the organization, and
/// waits (up to [`DRAIN_TIMEOUT`]) until none runs. Returns how many it
/// cancelled.
async fn cancel_unfinished(state: &AppState, organization_id: Uuid) -> AppResult<usize> {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let mut cancelled: HashSet<Uuid> = HashSet::new();
    loop {
        let unfinished: Vec<(Uuid, ExecutionStatus)> = execution::Entity::find()
            .select_only()
            .column(execution::Column::Id)
            .column(execution::Column::Status)
            .filter(execution::Column::OrganizationId.eq(organization_id))
            .filter(
                execution::Column::Status
                    .is_in([ExecutionStatus::Queued, ExecutionStatus::Running]),
            )
            .into_tuple()
            .all(&state.db)
            .await?;
        if unfinished.is_empty() {
            return Ok(cancelled.len());
        }
        let mut running = false;
        for (id, status) in unfinished {
            // A running execution is asked once; one put back in the queue
            // (its worker died) is cancelled outright.
            if status == ExecutionStatus::Running && cancelled.contains(&id) {
                running = true;
                continue;
            }
            match journal::cancel(state, id).await? {
                CancelOutcome::Cancelled(_) => {
                    cancelled.insert(id);
                }
                CancelOutcome::Requested(_) => {
                    cancelled.insert(id);
                    running = true;
                }
                CancelOutcome::AlreadyFinished(_) => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                %organization_id,
                "executions still unfinished after the deletion's wait; deleting them anyway"
            );
            return Ok(cancelled.len());
        }
        if !running {
            continue;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
