//! The execution engine: workers that claim queued executions under a
//! lease and run their DAGs, with every status change decided by `state`
//! and written, with its event, by `store`.
//!
//! The engine is used by services and `app`; it never imports `graphql` or
//! `http`.

pub mod cancel;
pub mod http;
pub mod reaper;
pub mod rendering;
pub mod runner;
pub mod scheduler;
pub mod state;
pub mod steps;
pub mod storable;
pub mod store;
pub mod worker;

pub use worker::Engine;
