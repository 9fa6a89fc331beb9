//! Rate limits on the identity surface (sign-in, registration, password
//! resets, verification mail, MFA codes): per client IP and per email
//! address, in fixed windows, for each limited action separately.
//!
//! Counts live in Redis when it is configured, so a limit holds across
//! instances; otherwise in this process's memory. When Redis fails, the
//! check lets the request through and logs it: an outage of the counter
//! must not lock every user out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

use crate::config::Settings;
use crate::error::{AppError, AppResult};

/// An action with its own limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// Sign-in, and every other check of a password.
    Login,
    Register,
    PasswordReset,
    VerificationEmail,
    /// Second-factor codes: completing a sign-in, and turning MFA on or off.
    MfaCode,
}

impl Limited {
    fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
            Self::PasswordReset => "password_reset",
            Self::VerificationEmail => "verification_email",
            Self::MfaCode => "mfa_code",
        }
    }
}

/// Counts attempts and refuses those over a limit.
#[derive(Clone)]
pub struct RateLimiter {
    store: Store,
    prefix: String,
    window_secs: i64,
    per_ip: u64,
    per_email: u64,
}

#[derive(Clone)]
enum Store {
    Memory(Arc<Mutex<HashMap<String, (i64, u64)>>>),
    Redis(ConnectionManager),
}

/// Keys kept in memory before old windows are swept.
const MEMORY_SWEEP_AT: usize = 10_000;

impl RateLimiter {
    /// Counting in Redis when given, in memory otherwise.
    pub fn new(settings: &Settings, redis: Option<ConnectionManager>) -> Self {
        Self {
            store: match redis {
                Some(redis) => Store::Redis(redis),
                None => Store::Memory(Arc::default()),
            },
            prefix: format!("{}ratelimit:", settings.redis_prefix),
            window_secs: i64::try_from(settings.rate_limit_window_secs.max(1)).unwrap_or(60),
            per_ip: settings.rate_limit_per_ip,
            per_email: settings.rate_limit_per_email,
        }
    }

    /// Counts one `action` attempt from `ip` for `email`; RATE_LIMITED when
    /// either count is over its limit in the current window.
    pub async fn check(
        &self,
        action: Limited,
        ip: Option<&str>,
        email: Option<&str>,
        now: DateTime<Utc>,
    ) -> AppResult<()> {
        let window = now.timestamp().div_euclid(self.window_secs);
        let retry_after_secs = u64::try_from((window + 1) * self.window_secs - now.timestamp())
            .unwrap_or(1)
            .max(1);
        let subjects = [("ip", ip, self.per_ip), ("email", email, self.per_email)];
        for (kind, subject, limit) in subjects {
            let Some(subject) = subject.filter(|_| limit > 0) else {
                continue;
            };
            let key = format!(
                "{}{}:{kind}:{}",
                self.prefix,
                action.name(),
                subject.to_lowercase()
            );
            if self.count(&key, window).await > limit {
                return Err(AppError::RateLimited { retry_after_secs });
            }
        }
        Ok(())
    }

    /// Adds one to `key` in `window` and returns the new count.
    async fn count(&self, key: &str, window: i64) -> u64 {
        match &self.store {
            Store::Memory(counts) => {
                let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
                if counts.len() >= MEMORY_SWEEP_AT {
                    counts.retain(|_, (w, _)| *w == window);
                }
                let entry = counts.entry(key.to_owned()).or_insert((window, 0));
                if entry.0 != window {
                    *entry = (window, 0);
                }
                entry.1 += 1;
                entry.1
            }
            Store::Redis(redis) => {
                let key = format!("{key}:{window}");
                let mut redis = redis.clone();
                let counted: redis::RedisResult<(u64,)> = redis::pipe()
                    .atomic()
                    .incr(&key, 1)
                    .expire(&key, self.window_secs * 2)
                    .ignore()
                    .query_async(&mut redis)
                    .await;
                match counted {
                    Ok((count,)) => count,
                    Err(err) => {
                        tracing::warn!(error = %err, "rate limit counter unavailable; allowing the request");
                        0
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn limiter(per_ip: u64, per_email: u64) -> RateLimiter {
        let mut settings = Settings::parse_from(["flowpilot"]);
        settings.rate_limit_per_ip = per_ip;
        settings.rate_limit_per_email = per_email;
        settings.rate_limit_window_secs = 60;
        RateLimiter::new(&settings, None)
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[tokio::test]
    async fn the_attempt_over_the_limit_is_refused_until_the_window_ends() {
        let limiter = limiter(100, 3);
        for _ in 0..3 {
            limiter
                .check(Limited::Login, Some("10.0.0.1"), Some("a@x.io"), at(120))
                .await
                .unwrap();
        }
        let refused = limiter
            .check(Limited::Login, Some("10.0.0.1"), Some("a@x.io"), at(150))
            .await;
        assert!(matches!(
            refused,
            Err(AppError::RateLimited {
                retry_after_secs: 30
            })
        ));
        limiter
            .check(Limited::Login, Some("10.0.0.1"), Some("b@x.io"), at(150))
            .await
            .unwrap();
        limiter
            .check(Limited::Register, Some("10.0.0.1"), Some("a@x.io"), at(150))
            .await
            .unwrap();
        limiter
            .check(Limited::Login, Some("10.0.0.1"), Some("a@x.io"), at(180))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn one_address_is_limited_across_emails() {
        let limiter = limiter(2, 100);
        limiter
            .check(Limited::Login, Some("10.0.0.1"), Some("a@x.io"), at(0))
            .await
            .unwrap();
        limiter
            .check(Limited::Login, Some("10.0.0.1"), Some("b@x.io"), at(0))
            .await
            .unwrap();
        assert!(
            limiter
                .check(Limited::Login, Some("10.0.0.1"), Some("c@x.io"), at(0))
                .await
                .is_err()
        );
        limiter
            .check(Limited::Login, Some("10.0.0.2"), Some("c@x.io"), at(0))
            .await
            .unwrap();
    }
}
