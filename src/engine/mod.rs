//! The execution engine: workers that claim queued executions under a
//! lease and run their DAGs, with every status change decided by `state`
//! and written, with its event, by the `journal`.
//!
//! The engine is used by services and `app`; it never imports `graphql` or
//! `http` (see the `layering` test).

pub mod cancel;
pub mod definitions;
pub mod http;
pub mod journal;
pub mod reaper;
pub mod rendering;
pub mod runner;
pub mod state;
pub mod steps;
pub mod storable;
pub mod worker;

pub use worker::Engine;
