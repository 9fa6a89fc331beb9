//! Organizations, members, invitations, the audit log and the role-based
//! access policy. `service`, `members`, `invitations` and `audit` hold the
//! rules and the database work; `schema` and `members_schema` expose them.
//!
//! `policy` is the only place that decides what a role may do; services and
//! resolvers ask it and never compare roles themselves.

pub mod access;
pub mod audit;
pub mod deletion;
pub mod invitations;
pub mod loaders;
pub mod members;
pub mod members_schema;
pub mod policy;
pub mod principal;
pub mod schema;
pub mod service;
