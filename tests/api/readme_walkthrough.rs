//! The README's walk-through works as written. Every ```graphql block of
//! "Walk-through in GraphiQL", "Live dashboards" and "Workflows and
//! executions" is sent, in order, to a real server, as a reader pasting it
//! into GraphiQL would: with the access token the story has put in the
//! *Headers* tab by then, and each `"<placeholder>"` replaced by the value
//! it names (from an earlier answer, a mail the server sent, or a code the
//! authenticator shows at a time step not used before). Each block must
//! answer without errors, or with the error the README promises.
//! Subscriptions run over graphql-transport-ws. A block the table below
//! does not know, or a placeholder it does not fill, fails the test, so the
//! README cannot drift from the server.

use std::collections::HashMap;
use std::path::Path;

use async_graphql::parser::types::{DocumentOperations, OperationType};
use serde_json::{Value, json};

use crate::mfa::next_step_code;
use crate::organization_streams::SETTLE;
use crate::support::ws::WsClient;
use crate::support::{GqlResponse, TestApp};

/// The README sections the walk-through runs through, in order.
const SECTIONS: [&str; 3] = [
    "Walk-through in GraphiQL",
    "Live dashboards",
    "Workflows and executions",
];

const ADA: &str = "ada@example.com";
const GRACE: &str = "grace@example.com";

/// Kept values that are no placeholder of the README.
const ADA_TOKEN: &str = "Ada's access token";
const GRACE_TOKEN: &str = "Grace's access token";
const ADA_SESSIONS: &str = "Ada's sessions";
const TOTP_SECRET: &str = "Ada's TOTP secret";
/// The placeholder of every authenticator code.
const CODE: &str = "code from the authenticator app";

#[tokio::test]
async fn the_readme_walk_through_runs_in_order_against_the_real_server() {
    let app = TestApp::spawn().await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(path).expect("README.md reads");
    let blocks = graphql_blocks(&readme);
    let mut table = table();
    let mut walk = Walk {
        app: &app,
        kept: HashMap::new(),
        sent: HashMap::new(),
    };
    let mut ran = 0;
    for block in blocks
        .iter()
        .filter(|block| SECTIONS.contains(&block.section.as_str()))
    {
        let (kind, name) = operation(block);
        let known = table
            .iter()
            .position(|step| step.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "README line {}: the walk-through test's table has no (more) {name}",
                    block.line
                )
            });
        let step = table.remove(known);
        walk.run(block, kind, &step).await;
        ran += 1;
    }
    let missing: Vec<&str> = table.iter().map(|step| step.name).collect();
    assert!(missing.is_empty(), "the README no longer has {missing:?}");
    assert_eq!(
        ran,
        blocks.len(),
        "every ```graphql block of the README is in a walk-through section and ran"
    );
}

/// What the README has each operation do, by its name, in README order.
fn table() -> Vec<Step> {
    use Fill::{FreshCode, Kept, OtherSession};
    use Who::{Ada, Grace, Nobody};
    let mail =
        |to: &'static str, path: &'static str, prefix: &'static str, nth: usize| Fill::Mail {
            to,
            path,
            prefix,
            nth,
        };
    let organization = "organization id";
    let workflow = "workflow id";
    let execution = "execution id";
    vec![
        step("Register", Nobody).keep(ADA_TOKEN, "/register/accessToken"),
        step("Viewer", Ada).shows("/viewer/emailVerified", json!(false)),
        step("ResendVerificationEmail", Ada),
        // Registering mailed the first link, asking again the second.
        step("VerifyEmail", Ada).fill(
            "token from the verification mail",
            mail(ADA, "/verify-email", "fpv_", 2),
        ),
        step("CreateOrganization", Ada).keep(organization, "/createOrganization/id"),
        step("Organization", Ada).fill(organization, Kept),
        step("OrganizationBySlug", Ada).shows("/organizationBySlug/name", json!("Acme, Inc.")),
        step("InviteMember", Ada).fill(organization, Kept),
        step("RegisterGrace", Nobody)
            .keep(GRACE_TOKEN, "/register/accessToken")
            .keep("Grace's user id", "/register/user/id"),
        step("AcceptInvitation", Grace)
            .fill(
                "token from the invitation mail",
                mail(GRACE, "/accept-invitation", "fpi_", 1),
            )
            .shows("/acceptInvitation/viewerRole", json!("EDITOR")),
        step("OrganizationMembers", Ada).fill(organization, Kept),
        step("UpdateMemberRole", Ada)
            .fill(organization, Kept)
            .fill("Grace's user id", Kept),
        step("TransferOwnership", Ada)
            .fill(organization, Kept)
            .fill("Grace's user id", Kept)
            .shows("/transferOwnership/viewerRole", json!("ADMIN")),
        step("UpdateOrganization", Ada).fill(organization, Kept),
        step("CreateApiKey", Ada)
            .fill(organization, Kept)
            .keep("API key id", "/createApiKey/apiKey/id"),
        step("ApiKeys", Ada).fill(organization, Kept),
        step("RevokeApiKey", Ada).fill("API key id", Kept),
        step("CreateSandboxOrganization", Ada)
            .keep("sandbox organization id", "/createOrganization/id"),
        step("LeaveOrganization", Ada)
            .fill("sandbox organization id", Kept)
            .fails_with("CONFLICT"),
        step("DeleteOrganization", Ada).fill("sandbox organization id", Kept),
        step("Login", Nobody)
            .keep(ADA_TOKEN, "/login/accessToken")
            .keep("refreshToken", "/login/refreshToken"),
        step("RefreshSession", Nobody)
            .fill("refreshToken", Kept)
            .keep(ADA_TOKEN, "/refreshSession/accessToken"),
        step("Sessions", Ada).keep(ADA_SESSIONS, "/viewer/sessions/edges"),
        step("RevokeSession", Ada).fill("session id", OtherSession),
        step("RevokeOtherSessions", Ada),
        step("Logout", Ada),
        step("LoginAfterLogout", Nobody).keep(ADA_TOKEN, "/login/accessToken"),
        step("LogoutAll", Ada),
        step("LoginAfterLogoutAll", Nobody).keep(ADA_TOKEN, "/login/accessToken"),
        step("ChangePassword", Ada),
        step("RequestPasswordReset", Nobody),
        step("ResetPassword", Nobody).fill(
            "token from the reset mail",
            mail(ADA, "/reset-password", "fpp_", 1),
        ),
        step("LoginWithNewPassword", Nobody).keep(ADA_TOKEN, "/login/accessToken"),
        step("SetupMfa", Ada).keep(TOTP_SECRET, "/setupMfa/secret"),
        step("EnableMfa", Ada).fill(CODE, FreshCode),
        step("LoginWithMfa", Nobody).keep("challengeToken", "/login/challengeToken"),
        step("CompleteMfaLogin", Nobody)
            .fill("challengeToken", Kept)
            .fill(CODE, FreshCode)
            .keep(ADA_TOKEN, "/completeMfaLogin/accessToken"),
        step("RegenerateBackupCodes", Ada).fill(CODE, FreshCode),
        step("DisableMfa", Ada)
            .fill(CODE, FreshCode)
            .shows("/disableMfa/mfaEnabled", json!(false)),
        step("CreateWorkflow", Ada)
            .fill(organization, Kept)
            .keep(workflow, "/createWorkflow/id"),
        step("RunWorkflow", Ada)
            .fill(workflow, Kept)
            .keep(execution, "/runWorkflow/id"),
        step("ExecutionEvents", Ada).fill(execution, Kept),
        step("Execution", Ada)
            .fill(execution, Kept)
            .shows("/execution/status", json!("SUCCEEDED"))
            .shows("/execution/output", json!("n is 42")),
        step("RetryExecution", Ada)
            .fill(execution, Kept)
            .keep("retry's execution id", "/retryExecution/id"),
        step("CancelExecution", Ada).fill("retry's execution id", Kept),
        step("Dashboard", Ada)
            .variable("org", organization)
            .while_open("RetryExecution"),
        step("CreateWorkflowVersion", Ada)
            .fill(workflow, Kept)
            .keep("version id", "/createWorkflowVersion/id"),
        step("PublishWorkflowVersion", Ada)
            .fill(workflow, Kept)
            .fill("version id", Kept)
            .shows("/publishWorkflowVersion/revision", json!(2)),
        step("WorkflowVersions", Ada).fill(workflow, Kept),
        step("UpdateWorkflow", Ada).fill(workflow, Kept),
        step("Workflows", Ada).fill(organization, Kept),
        step("CreateScheduleTrigger", Ada)
            .fill(workflow, Kept)
            .keep("trigger id", "/createScheduleTrigger/id"),
        step("CreateWebhookTrigger", Ada).fill(workflow, Kept),
        step("SetTriggerEnabled", Ada).fill("trigger id", Kept),
        step("DeleteTrigger", Ada).fill("trigger id", Kept),
        step("WorkflowTriggers", Ada).fill(workflow, Kept),
    ]
}

/// Whose access token is in GraphiQL's *Headers* tab for a block.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// None needed: the operation takes no account (and ignores a header).
    Nobody,
    /// The first account's, from its latest sign-in.
    Ada,
    /// The second account's.
    Grace,
}

/// Where the value of a `"<placeholder>"` comes from.
#[derive(Clone, Copy, Debug)]
enum Fill {
    /// An earlier answer, kept under the placeholder's name.
    Kept,
    /// The token of the `nth` (from 1) `<path>?token=` link mailed to `to`.
    Mail {
        to: &'static str,
        path: &'static str,
        prefix: &'static str,
        nth: usize,
    },
    /// The code the authenticator app shows at a TOTP step not used before.
    FreshCode,
    /// The id of a session of Ada's other than the current one, from the
    /// `Sessions` answer.
    OtherSession,
}

/// One operation of the README, as the story runs it.
struct Step {
    name: &'static str,
    who: Who,
    /// How each placeholder of the block is filled.
    fills: Vec<(&'static str, Fill)>,
    /// The block's variables (GraphiQL's *Variables* tab), from kept values.
    variables: Vec<(&'static str, &'static str)>,
    /// Values of the answer later blocks use: a name and a JSON pointer
    /// into `data`.
    keeps: Vec<(&'static str, &'static str)>,
    /// Values the answer must hold: a JSON pointer into `data` and the value.
    shows: Vec<(&'static str, Value)>,
    /// `None`: no errors; otherwise the error code the README promises.
    error: Option<&'static str>,
    /// For a subscription that never completes: an earlier block sent again
    /// while it is open, which starts an execution whose finishing event the
    /// subscription must deliver.
    while_open: Option<&'static str>,
}

fn step(name: &'static str, who: Who) -> Step {
    Step {
        name,
        who,
        fills: Vec::new(),
        variables: Vec::new(),
        keeps: Vec::new(),
        shows: Vec::new(),
        error: None,
        while_open: None,
    }
}

impl Step {
    fn fill(mut self, placeholder: &'static str, fill: Fill) -> Self {
        self.fills.push((placeholder, fill));
        self
    }

    fn variable(mut self, name: &'static str, kept: &'static str) -> Self {
        self.variables.push((name, kept));
        self
    }

    fn keep(mut self, name: &'static str, pointer: &'static str) -> Self {
        self.keeps.push((name, pointer));
        self
    }

    fn shows(mut self, pointer: &'static str, value: Value) -> Self {
        self.shows.push((pointer, value));
        self
    }

    fn fails_with(mut self, code: &'static str) -> Self {
        self.error = Some(code);
        self
    }

    fn while_open(mut self, block: &'static str) -> Self {
        self.while_open = Some(block);
        self
    }
}

/// The walk so far: the server, the values earlier answers gave, and the
/// text each block was sent as.
struct Walk<'a> {
    app: &'a TestApp,
    kept: HashMap<&'static str, Value>,
    sent: HashMap<&'static str, String>,
}

impl Walk<'_> {
    /// Sends `block` as `step` says and checks and keeps what it answers.
    async fn run(&mut self, block: &Block, kind: OperationType, step: &Step) {
        let at = format!("README line {} ({})", block.line, step.name);
        let text = self.filled(block, step, &at).await;
        let token = self.token(step.who);
        let variables: serde_json::Map<String, Value> = step
            .variables
            .iter()
            .map(|(name, kept)| ((*name).to_owned(), self.kept(kept).clone()))
            .collect();
        let data = if kind == OperationType::Subscription {
            self.subscribe(&text, token.as_deref(), Value::Object(variables), step)
                .await
        } else {
            let response = self
                .send(token.as_deref(), &text, Value::Object(variables))
                .await;
            if let Some(code) = step.error {
                assert_eq!(response.error_code(), code, "{at}: {}", response.body);
                Value::Null
            } else {
                assert!(
                    response.body.get("errors").is_none(),
                    "{at} answered errors: {}",
                    response.body
                );
                response.body["data"].clone()
            }
        };
        for (pointer, expected) in &step.shows {
            assert_eq!(data.pointer(pointer), Some(expected), "{at}: {data}");
        }
        for (name, pointer) in &step.keeps {
            let value = data
                .pointer(pointer)
                .filter(|value| !value.is_null())
                .unwrap_or_else(|| panic!("{at}: no {pointer} to keep as {name} in {data}"));
            self.kept.insert(*name, value.clone());
        }
        self.sent.insert(step.name, text);
    }

    /// The block's text with every placeholder replaced by its value, as a
    /// JSON (and so GraphQL) string.
    async fn filled(&self, block: &Block, step: &Step, at: &str) -> String {
        let names = placeholders(&block.text);
        for (name, _) in &step.fills {
            assert!(
                names.iter().any(|found| found == name),
                "{at}: the block no longer has \"<{name}>\""
            );
        }
        let mut text = block.text.clone();
        for name in names {
            let fill = step
                .fills
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, fill)| *fill)
                .unwrap_or_else(|| {
                    panic!("{at}: the walk-through test does not fill \"<{name}>\"")
                });
            let value = Value::String(self.value(&name, fill).await).to_string();
            text = text.replacen(format!("\"<{name}>\"").as_str(), &value, 1);
        }
        text
    }

    /// The value of the placeholder `name`.
    async fn value(&self, name: &str, fill: Fill) -> String {
        match fill {
            Fill::Kept => self.kept_str(name),
            Fill::Mail {
                to,
                path,
                prefix,
                nth,
            } => self.app.mailed_token(to, path, prefix, nth).await,
            Fill::FreshCode => next_step_code(self.app, &self.kept_str(TOTP_SECRET)),
            Fill::OtherSession => self
                .kept(ADA_SESSIONS)
                .as_array()
                .expect("a list of sessions")
                .iter()
                .map(|edge| &edge["node"])
                .find(|session| session["current"] == false)
                .and_then(|session| session["id"].as_str())
                .expect("a session besides the current one")
                .to_owned(),
        }
    }

    fn kept(&self, name: &str) -> &Value {
        self.kept
            .get(name)
            .unwrap_or_else(|| panic!("no earlier answer gave {name}"))
    }

    fn kept_str(&self, name: &str) -> String {
        self.kept(name)
            .as_str()
            .unwrap_or_else(|| panic!("{name} is not a string"))
            .to_owned()
    }

    /// The bearer token `who` sends, if any.
    fn token(&self, who: Who) -> Option<String> {
        match who {
            Who::Nobody => None,
            Who::Ada => Some(self.kept_str(ADA_TOKEN)),
            Who::Grace => Some(self.kept_str(GRACE_TOKEN)),
        }
    }

    async fn send(&self, token: Option<&str>, text: &str, variables: Value) -> GqlResponse {
        match token {
            Some(token) => self.app.graphql_as(token, text, variables).await,
            None => self.app.graphql(text, variables).await,
        }
    }

    /// Runs a subscription over graphql-transport-ws until it completes, or,
    /// with `while_open`, until the execution that block starts has
    /// finished; answers the `data` of the last item.
    async fn subscribe(
        &self,
        text: &str,
        token: Option<&str>,
        variables: Value,
        step: &Step,
    ) -> Value {
        let mut client = WsClient::connect_as(self.app, token).await;
        client.subscribe("readme", text, variables).await;
        let last = match step.while_open {
            None => {
                let mut items = Vec::new();
                while let Some(data) = next_item(&mut client).await {
                    items.push(data);
                }
                items.pop().expect("the subscription sent something")
            }
            Some(starter) => {
                tokio::time::sleep(SETTLE).await;
                let again = self
                    .sent
                    .get(starter)
                    .expect("the starting block ran before");
                let started = self.send(token, again, json!({})).await;
                let execution = root_field(started.data())["id"]
                    .as_str()
                    .expect("the started execution's id")
                    .to_owned();
                loop {
                    let data = next_item(&mut client).await.expect("the stream stays open");
                    let event = root_field(&data);
                    if event["executionId"] == execution.as_str()
                        && event["executionStatus"] == "SUCCEEDED"
                    {
                        break data;
                    }
                }
            }
        };
        client.close().await;
        last
    }
}

/// The `data` of the next `next` message, or `None` at `complete`; an error
/// fails.
async fn next_item(client: &mut WsClient) -> Option<Value> {
    loop {
        let message = client.next_json().await;
        match message["type"].as_str() {
            Some("next") => {
                assert!(
                    message["payload"].get("errors").is_none(),
                    "error in stream: {message}"
                );
                return Some(message["payload"]["data"].clone());
            }
            Some("complete") => return None,
            Some("ping" | "pong") => {}
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
}

/// The value of the one root field of `data`.
fn root_field(data: &Value) -> &Value {
    data.as_object()
        .and_then(|fields| fields.values().next())
        .unwrap_or_else(|| panic!("no root field in {data}"))
}

/// The names of the `"<placeholder>"`s of `text`, in order, repeats
/// included.
fn placeholders(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("\"<") {
        let after = &rest[start + 2..];
        let end = after
            .find(">\"")
            .unwrap_or_else(|| panic!("an unclosed placeholder in {text}"));
        names.push(after[..end].to_owned());
        rest = &after[end + 2..];
    }
    names
}

/// The kind and name of the one named operation a block holds.
fn operation(block: &Block) -> (OperationType, String) {
    let document = async_graphql::parser::parse_query(&block.text)
        .unwrap_or_else(|err| panic!("README line {}: {err}", block.line));
    match &document.operations {
        DocumentOperations::Multiple(operations) if operations.len() == 1 => {
            let (name, operation) = operations.iter().next().expect("one operation");
            (operation.node.ty, name.as_str().to_owned())
        }
        _ => panic!(
            "README line {}: a block holds exactly one named operation",
            block.line
        ),
    }
}

/// A fenced ```graphql block of the README.
struct Block {
    /// The `## ` section it is in.
    section: String,
    /// The line its opening fence is on, from 1.
    line: usize,
    text: String,
}

/// Every ```graphql (or ```gql) block of `markdown`, in order, found as
/// clients/readme-operations.mjs finds them: a fence of three or more
/// backticks or tildes, possibly indented (inside a list item), whose info
/// string's first word is `graphql`; up to the fence's own indentation is
/// removed from each line of the block.
fn graphql_blocks(markdown: &str) -> Vec<Block> {
    struct Open {
        fence: char,
        length: usize,
        indent: usize,
        graphql: bool,
        line: usize,
        body: Vec<String>,
    }
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut open: Option<Open> = None;
    for (number, line) in markdown.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        let run = |fence: char| rest.chars().take_while(|c| *c == fence).count();
        match open.as_mut() {
            None => {
                if let Some(heading) = line.strip_prefix("## ") {
                    section = heading.trim().to_owned();
                }
                let Some(fence) = rest.chars().next().filter(|c| *c == '`' || *c == '~') else {
                    continue;
                };
                let length = run(fence);
                let info = &rest[length..];
                if length >= 3 && !info.contains('`') {
                    let word = info.split_whitespace().next().unwrap_or("");
                    open = Some(Open {
                        fence,
                        length,
                        indent,
                        graphql: word.eq_ignore_ascii_case("graphql")
                            || word.eq_ignore_ascii_case("gql"),
                        line: number + 1,
                        body: Vec::new(),
                    });
                }
            }
            Some(block) => {
                let length = run(block.fence);
                if length >= 3 && length >= block.length && rest[length..].trim().is_empty() {
                    if block.graphql {
                        blocks.push(Block {
                            section: section.clone(),
                            line: block.line,
                            text: block.body.join("\n"),
                        });
                    }
                    open = None;
                } else {
                    block.body.push(line[indent.min(block.indent)..].to_owned());
                }
            }
        }
    }
    if let Some(block) = open {
        assert!(
            !block.graphql,
            "README line {}: a graphql block is never closed",
            block.line
        );
    }
    blocks
}
