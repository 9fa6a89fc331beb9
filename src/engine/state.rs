//! The one place that decides which status may follow which.
//!
//! Every change the engine or a service makes to an execution or a step
//! goes through [`execution_transition`] or [`step_transition`]; an illegal
//! change is an error and is never applied. The legal transitions are
//! exactly those of DESIGN.md's "Executions" section.

use entity::status::{ExecutionStatus, StepStatus};

/// Why a RUNNING execution goes back to QUEUED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequeueReason {
    /// Its worker stopped renewing the lease (crashed or cut off).
    LeaseExpired,
    /// Its worker shut down and handed it back.
    HandedBack,
    /// It waits until `run_after` (a long backoff or delay).
    Parked,
}

/// An attempted transition that the state machine forbids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("illegal {entity} transition {from} -> {to}")]
pub struct IllegalTransition {
    pub entity: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

/// A requested change of an execution's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionChange {
    /// Move to a status other than QUEUED.
    To(ExecutionStatus),
    /// RUNNING back to QUEUED, for a reason.
    Requeue(RequeueReason),
}

/// The status an execution in `from` has after `change`, or the error.
pub fn execution_transition(
    from: ExecutionStatus,
    change: ExecutionChange,
) -> Result<ExecutionStatus, IllegalTransition> {
    use ExecutionStatus::*;
    let to = match change {
        ExecutionChange::To(to) => to,
        ExecutionChange::Requeue(_) => Queued,
    };
    let legal = matches!(
        (from, change),
        (Queued, ExecutionChange::To(Running | Cancelled | TimedOut))
            | (
                Running,
                ExecutionChange::To(Succeeded | Failed | Cancelled | TimedOut)
            )
            | (Running, ExecutionChange::Requeue(_))
    );
    if legal {
        Ok(to)
    } else {
        Err(IllegalTransition {
            entity: "execution",
            from: execution_name(from),
            to: execution_name(to),
        })
    }
}

/// The status a step in `from` has after moving to `to`, or the error.
pub fn step_transition(from: StepStatus, to: StepStatus) -> Result<StepStatus, IllegalTransition> {
    use StepStatus::*;
    let legal = matches!(
        (from, to),
        (Pending, Running | Skipped | Cancelled)
            | (Running, Succeeded | Failed | Cancelled | Retrying)
            | (Retrying, Running | Cancelled)
    );
    if legal {
        Ok(to)
    } else {
        Err(IllegalTransition {
            entity: "step",
            from: step_name(from),
            to: step_name(to),
        })
    }
}

/// The GraphQL and database name of an execution status.
pub fn execution_name(status: ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::Queued => "QUEUED",
        ExecutionStatus::Running => "RUNNING",
        ExecutionStatus::Succeeded => "SUCCEEDED",
        ExecutionStatus::Failed => "FAILED",
        ExecutionStatus::Cancelled => "CANCELLED",
        ExecutionStatus::TimedOut => "TIMED_OUT",
    }
}

/// The GraphQL and database name of a step status.
pub fn step_name(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "PENDING",
        StepStatus::Running => "RUNNING",
        StepStatus::Retrying => "RETRYING",
        StepStatus::Succeeded => "SUCCEEDED",
        StepStatus::Failed => "FAILED",
        StepStatus::Skipped => "SKIPPED",
        StepStatus::Cancelled => "CANCELLED",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use sea_orm::Iterable;

    use super::*;

    #[test]
    fn exactly_the_designed_execution_transitions_are_legal() {
        use ExecutionStatus::*;
        let legal: HashSet<(ExecutionStatus, ExecutionStatus)> = [
            (Queued, Running),
            (Queued, Cancelled),
            (Queued, TimedOut),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Running, TimedOut),
        ]
        .into_iter()
        .collect();
        for from in ExecutionStatus::iter() {
            for to in ExecutionStatus::iter().filter(|to| *to != Queued) {
                let result = execution_transition(from, ExecutionChange::To(to));
                assert_eq!(
                    result.is_ok(),
                    legal.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
                if let Ok(next) = result {
                    assert_eq!(next, to);
                }
            }
        }
    }

    #[test]
    fn only_a_running_execution_goes_back_to_queued_and_only_with_a_reason() {
        let reasons = [
            RequeueReason::LeaseExpired,
            RequeueReason::HandedBack,
            RequeueReason::Parked,
        ];
        for from in ExecutionStatus::iter() {
            for reason in reasons {
                let result = execution_transition(from, ExecutionChange::Requeue(reason));
                assert_eq!(
                    result.is_ok(),
                    from == ExecutionStatus::Running,
                    "{from:?} requeued for {reason:?}"
                );
                if let Ok(next) = result {
                    assert_eq!(next, ExecutionStatus::Queued);
                }
            }
        }
        for from in ExecutionStatus::iter() {
            assert!(
                execution_transition(from, ExecutionChange::To(ExecutionStatus::Queued)).is_err(),
                "{from:?} -> QUEUED without a reason"
            );
        }
    }

    #[test]
    fn finished_executions_never_change_again() {
        for from in ExecutionStatus::iter().filter(|s| s.is_terminal()) {
            for to in ExecutionStatus::iter().filter(|to| *to != ExecutionStatus::Queued) {
                assert!(execution_transition(from, ExecutionChange::To(to)).is_err());
            }
        }
    }

    #[test]
    fn exactly_the_designed_step_transitions_are_legal() {
        use StepStatus::*;
        let legal: HashSet<(StepStatus, StepStatus)> = [
            (Pending, Running),
            (Pending, Skipped),
            (Pending, Cancelled),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Running, Retrying),
            (Retrying, Running),
            (Retrying, Cancelled),
        ]
        .into_iter()
        .collect();
        for from in StepStatus::iter() {
            for to in StepStatus::iter() {
                let result = step_transition(from, to);
                assert_eq!(
                    result.is_ok(),
                    legal.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn an_illegal_transition_names_both_statuses() {
        let err = step_transition(StepStatus::Succeeded, StepStatus::Running).unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal step transition SUCCEEDED -> RUNNING"
        );
    }
}
