//! Events: the durable execution event log and the bus that carries events
//! and control messages between the parts of FlowPilot (and, later, its
//! instances).
//!
//! This module is used by services and the engine; it never imports
//! `graphql` or `http`.

pub mod bus;
pub mod fan_out;
pub mod log;
pub mod organization_stream;
pub mod patience;
pub mod recheck;
pub mod redis_bus;
pub mod replay;
pub mod watermark;

pub use bus::{BusMessage, BusSignal, EventBus, Topic};
pub use log::{EventKind, ExecutionEventRecord, ExecutionSnapshot, StepSnapshot};
