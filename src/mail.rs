//! Mail: the messages FlowPilot sends to account owners.
//!
//! With `FLOWPILOT_SMTP_URL` set, messages go out over SMTP (lettre), sent
//! in the background so a slow mail server never slows a request. Without
//! it, each message is written to the log at INFO, whole, so that someone
//! running the embedded default can follow every flow; don't run a shared
//! deployment that way. Tests capture messages through the same seam.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::Settings;

/// One message to one recipient, in plain text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// `<FLOWPILOT_APP_URL>/<path>?token=<token>`: a link in account mail to a
/// page of the web app, which hands the token to the API.
pub fn app_link(settings: &Settings, path: &str, token: &str) -> String {
    let base = settings.app_url.trim_end_matches('/');
    format!("{base}/{path}?token={token}")
}

/// Sends mail; cheap to clone.
#[derive(Clone)]
pub struct Mailer(Arc<Transport>);

// One per process, behind an `Arc`: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Transport {
    Log,
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    Capture(Mutex<Vec<Mail>>),
}

impl Mailer {
    /// SMTP when `FLOWPILOT_SMTP_URL` is set, the log otherwise.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let Some(url) = &settings.smtp_url else {
            return Ok(Self(Arc::new(Transport::Log)));
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .context("FLOWPILOT_SMTP_URL is not a valid SMTP URL")?
            .build();
        let from = settings
            .mail_from
            .parse()
            .context("FLOWPILOT_MAIL_FROM is not a valid address")?;
        Ok(Self(Arc::new(Transport::Smtp { transport, from })))
    }

    /// A mailer that keeps what it is given, for tests to read.
    pub fn capture() -> Self {
        Self(Arc::new(Transport::Capture(Mutex::new(Vec::new()))))
    }

    /// What a capturing mailer was given, oldest first.
    pub fn captured(&self) -> Vec<Mail> {
        match &*self.0 {
            Transport::Capture(sent) => sent.lock().map(|s| s.clone()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Sends `mail` without waiting for it; a failure is logged (with the
    /// recipient and subject, never the body, which may carry a link).
    pub fn send(&self, mail: Mail) {
        match &*self.0 {
            Transport::Log => {
                tracing::info!(to = %mail.to, subject = %mail.subject, body = %mail.body, "mail (not sent: FLOWPILOT_SMTP_URL is not set)");
            }
            Transport::Capture(sent) => {
                if let Ok(mut sent) = sent.lock() {
                    sent.push(mail);
                }
            }
            Transport::Smtp { transport, from } => {
                let (transport, from) = (transport.clone(), from.clone());
                tokio::spawn(async move {
                    let (to, subject) = (mail.to.clone(), mail.subject.clone());
                    if let Err(err) = deliver(&transport, from, mail).await {
                        tracing::error!(%to, %subject, error = %err, "sending mail failed");
                    }
                });
            }
        }
    }
}

async fn deliver(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    mail: Mail,
) -> anyhow::Result<()> {
    let message = lettre::Message::builder()
        .from(from)
        .to(mail.to.parse()?)
        .subject(mail.subject)
        .body(mail.body)?;
    transport.send(message).await?;
    Ok(())
}
