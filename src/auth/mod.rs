//! Identity: registration, sign-in, sessions and the tokens that name them.
//!
//! `service` holds the rules and the database work; `schema` exposes them to
//! GraphQL. Input is parsed into [`Email`], [`Password`] and [`DisplayName`]
//! once, at the edge, so the service only ever sees valid values.

mod email;
mod password;
mod profile;
pub mod rate_limit;
pub mod schema;
pub mod service;
pub mod tokens;

pub use email::Email;
pub use password::{Password, hash_password, verify_password};
pub use profile::DisplayName;
