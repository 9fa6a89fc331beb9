//! Cancellation of running executions: the executions running in this
//! process, each with a flag its runner watches. The flag is raised by a
//! `CancelRequested` message on the control topic (from any instance) or,
//! as a fallback, by the heartbeat finding `cancel_requested` set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use uuid::Uuid;

use crate::events::bus::Subscription;
use crate::events::{BusMessage, BusSignal};

/// Executions running here, by id.
#[derive(Clone, Default)]
pub struct Cancellations {
    running: Arc<Mutex<HashMap<Uuid, watch::Sender<bool>>>>,
}

/// A runner's view of its execution's cancel flag; unregisters on drop.
pub struct CancelWatch {
    cancellations: Cancellations,
    execution_id: Uuid,
    pub requested: watch::Receiver<bool>,
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        self.cancellations.lock().remove(&self.execution_id);
    }
}

impl Cancellations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, watch::Sender<bool>>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a running execution.
    pub fn watch(&self, execution_id: Uuid) -> CancelWatch {
        let (sender, requested) = watch::channel(false);
        self.lock().insert(execution_id, sender);
        CancelWatch {
            cancellations: self.clone(),
            execution_id,
            requested,
        }
    }

    /// Raises the flag of `execution_id` if it runs here.
    pub fn cancel(&self, execution_id: Uuid) {
        if let Some(sender) = self.lock().get(&execution_id) {
            let _ = sender.send(true);
        }
    }
}

/// Raises flags for `CancelRequested` messages on `control` until `stop`.
pub async fn listen(
    mut control: Subscription,
    cancellations: Cancellations,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            signal = control.recv() => match signal {
                Some(BusSignal::Message(BusMessage::CancelRequested { execution_id })) => cancellations.cancel(execution_id),
                Some(_) => {}
                None => return,
            },
            _ = stop.changed() => return,
        }
    }
}
