//! Identity: registration, sign-in, sessions and the tokens that name them,
//! email verification, password changes and resets, TOTP MFA, and the API
//! keys programs use in place of a user.
//!
//! `service`, `account` and `mfa` hold the rules and the database work;
//! `schema`, `account_schema` and `mfa_schema` expose them to GraphQL. Input is parsed into [`Email`],
//! [`Password`] and [`DisplayName`] once, at the edge, so the services only
//! ever see valid values.

pub mod account;
pub mod account_schema;
pub mod api_keys;
pub mod api_keys_schema;
mod email;
pub mod mfa;
pub mod mfa_schema;
mod one_time;
mod password;
mod profile;
pub mod rate_limit;
pub mod schema;
pub mod sealing;
pub mod service;
pub mod tokens;
mod totp;

pub use email::Email;
pub use password::{Hashers, Password};
pub use profile::DisplayName;
