//! Organizations, memberships and the role-based access policy.
//!
//! `policy` is the only place that decides what a role may do; services and
//! resolvers ask it and never compare roles themselves.

pub mod loaders;
pub mod policy;
pub mod schema;
pub mod service;
