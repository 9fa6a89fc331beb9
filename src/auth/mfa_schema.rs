//! GraphQL for TOTP MFA: enrolling, backup codes, turning it off, and
//! completing a sign-in. Thin: call `mfa`, convert.

use async_graphql::{Context, InputObject, Object, SimpleObject};

use super::mfa;
use super::schema::{AuthPayload, PASSWORD_HASH_COMPLEXITY, User};
use crate::graphql::context::RequestContext;

/// What an authenticator app needs to add the account.
#[derive(SimpleObject)]
pub struct MfaSetup {
    /// The secret in base32, to type in by hand.
    secret: String,
    /// `otpauth://totp/FlowPilot:<email>?secret=…&issuer=FlowPilot`.
    otpauth_uri: String,
    /// The URI as a QR code to scan, in SVG.
    qr_code_svg: String,
}

/// Backup codes, shown this once: each signs in once in place of a TOTP code.
#[derive(SimpleObject)]
pub struct BackupCodesPayload {
    /// The viewer, with MFA on.
    user: User,
    /// Ten codes such as `abcd-efgh-ijkl-mnop`, each good for one sign-in;
    /// earlier codes no longer work.
    backup_codes: Vec<String>,
}

/// A current code from the authenticator being enrolled.
#[derive(InputObject)]
pub struct EnableMfaInput {
    /// A current 6-digit code from the app enrolled with `setupMfa`.
    pub code: String,
}

/// A TOTP or backup code, to prove the second factor.
#[derive(InputObject)]
pub struct RegenerateBackupCodesInput {
    /// A current 6-digit TOTP code or an unused backup code.
    pub code: String,
}

/// The password and a TOTP or backup code.
#[derive(InputObject)]
pub struct DisableMfaInput {
    /// The viewer's password.
    pub password: String,
    /// A current 6-digit TOTP code or an unused backup code.
    pub code: String,
}

/// The challenge `login` answered and a TOTP or backup code.
#[derive(InputObject)]
pub struct CompleteMfaLoginInput {
    /// The `challengeToken` of the `MfaChallenge` that `login` answered.
    pub challenge_token: String,
    /// A 6-digit TOTP code, or a backup code (any case, dashes optional).
    pub code: String,
}

#[derive(Default)]
pub struct MfaMutation;

#[Object]
impl MfaMutation {
    /// Starts enrolling an authenticator app; `enableMfa` finishes it.
    /// CONFLICT while MFA is on.
    async fn setup_mfa(&self, ctx: &Context<'_>) -> async_graphql::Result<MfaSetup> {
        let request = RequestContext::of(ctx);
        let enrollment = mfa::setup(&request.state, request.viewer.user()?).await?;
        Ok(MfaSetup {
            secret: enrollment.secret,
            otpauth_uri: enrollment.otpauth_uri,
            qr_code_svg: enrollment.qr_code_svg,
        })
    }

    /// Turns MFA on with a current code from the enrolled app; answers the
    /// backup codes.
    async fn enable_mfa(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A code from the enrolled app.")] input: EnableMfaInput,
    ) -> async_graphql::Result<BackupCodesPayload> {
        let request = RequestContext::of(ctx);
        let viewer = request.viewer.user()?;
        let (user, backup_codes) =
            mfa::enable(&request.state, viewer, &input.code, &request.device).await?;
        Ok(BackupCodesPayload {
            user: user.into(),
            backup_codes,
        })
    }

    /// Replaces the backup codes; the old ones stop working.
    async fn regenerate_backup_codes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A code proving the second factor.")] input: RegenerateBackupCodesInput,
    ) -> async_graphql::Result<BackupCodesPayload> {
        let request = RequestContext::of(ctx);
        let viewer = request.viewer.user()?;
        let (user, backup_codes) =
            mfa::regenerate_backup_codes(&request.state, viewer, &input.code, &request.device)
                .await?;
        Ok(BackupCodesPayload {
            user: user.into(),
            backup_codes,
        })
    }

    /// Turns MFA off, with the password and a TOTP or backup code.
    #[graphql(complexity = "PASSWORD_HASH_COMPLEXITY + child_complexity")]
    async fn disable_mfa(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The password and a code.")] input: DisableMfaInput,
    ) -> async_graphql::Result<User> {
        let request = RequestContext::of(ctx);
        let user = mfa::disable(
            &request.state,
            request.viewer.user()?,
            input.password,
            &input.code,
            &request.device,
        )
        .await?;
        Ok(user.into())
    }

    /// Finishes a sign-in `login` answered with an `MfaChallenge`.
    async fn complete_mfa_login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The challenge and a code.")] input: CompleteMfaLoginInput,
    ) -> async_graphql::Result<AuthPayload> {
        let request = RequestContext::of(ctx);
        Ok(mfa::complete_login(
            &request.state,
            &input.challenge_token,
            &input.code,
            request.device.clone(),
        )
        .await?
        .into())
    }
}
