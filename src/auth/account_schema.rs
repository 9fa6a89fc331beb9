//! GraphQL for account upkeep: verifying the email address, and changing
//! or resetting the password. Thin: parse input, call `account`, convert.

use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::schema::{PASSWORD_HASH_COMPLEXITY, User};
use super::{Email, Password, account};
use crate::graphql::context::RequestContext;

/// The token from a verification link.
#[derive(InputObject)]
pub struct VerifyEmailInput {
    /// The token from the verification link; it works once, for 24 hours.
    pub token: String,
}

/// An address just verified.
#[derive(SimpleObject)]
pub struct EmailVerification {
    /// The address now verified.
    email: String,
    /// When it was verified.
    verified_at: DateTime<Utc>,
}

/// The current password and the one to replace it.
#[derive(InputObject)]
pub struct ChangePasswordInput {
    /// The password in force now; a wrong one is BAD_USER_INPUT.
    pub current_password: String,
    /// 10 to 256 characters, not a common password.
    pub new_password: String,
}

/// A changed password and the sessions it ended.
#[derive(SimpleObject)]
pub struct ChangePasswordPayload {
    /// The viewer, now with the new password.
    user: User,
    /// How many other sessions were ended.
    revoked_sessions: i32,
}

/// The address to mail a reset link to.
#[derive(InputObject)]
pub struct RequestPasswordResetInput {
    /// The account's address; case does not matter.
    pub email: String,
}

/// The token from a reset link and the new password.
#[derive(InputObject)]
pub struct ResetPasswordInput {
    /// The token from the reset link; it works once, for one hour.
    pub token: String,
    /// 10 to 256 characters, not a common password.
    pub new_password: String,
}

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Marks the address a verification link was mailed to verified. The
    /// link works once and for 24 hours.
    async fn verify_email(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token from the verification link.")] input: VerifyEmailInput,
    ) -> async_graphql::Result<EmailVerification> {
        let request = RequestContext::of(ctx);
        let user = account::verify_email(&request.state, &input.token).await?;
        Ok(EmailVerification {
            verified_at: user.email_verified_at.unwrap_or(user.updated_at),
            email: user.email,
        })
    }

    /// Mails the viewer a new verification link; earlier links stop
    /// working. CONFLICT once verified.
    async fn resend_verification_email(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let request = RequestContext::of(ctx);
        account::resend_verification(&request.state, request.viewer.user()?, &request.device)
            .await?;
        Ok(true)
    }

    /// Replaces the viewer's password and ends their other sessions.
    #[graphql(complexity = "2 * PASSWORD_HASH_COMPLEXITY + child_complexity")]
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The current and the new password.")] input: ChangePasswordInput,
    ) -> async_graphql::Result<ChangePasswordPayload> {
        let request = RequestContext::of(ctx);
        let viewer = request.viewer.user()?;
        let new_password = Password::parse(&input.new_password, "newPassword")?;
        let (user, ended) = account::change_password(
            &request.state,
            viewer,
            input.current_password,
            new_password,
            &request.device,
        )
        .await?;
        Ok(ChangePasswordPayload {
            user: user.into(),
            revoked_sessions: i32::try_from(ended).unwrap_or(i32::MAX),
        })
    }

    /// Mails a reset link, valid one hour, if an account has this address.
    /// Always true: the answer does not tell whether one does.
    async fn request_password_reset(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The address to mail the link to.")] input: RequestPasswordResetInput,
    ) -> async_graphql::Result<bool> {
        let request = RequestContext::of(ctx);
        let email = Email::parse(&input.email, "email")?;
        account::request_password_reset(&request.state, email, &request.device).await?;
        Ok(true)
    }

    /// Sets a new password with a reset link's token and ends every session
    /// of the account. The token works once.
    #[graphql(complexity = "PASSWORD_HASH_COMPLEXITY + child_complexity")]
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The reset link's token and the new password.")] input: ResetPasswordInput,
    ) -> async_graphql::Result<bool> {
        let request = RequestContext::of(ctx);
        let new_password = Password::parse(&input.new_password, "newPassword")?;
        account::reset_password(&request.state, &input.token, new_password).await?;
        Ok(true)
    }
}
