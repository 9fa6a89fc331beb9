#!/usr/bin/env python3
"""Seed a FlowPilot server for the authenticated fuzz pass (standard library only).

    python3 .ci/fuzz_auth.py seed  --url http://127.0.0.1:PORT --log SERVER_LOG --out STATE.json
    python3 .ci/fuzz_auth.py login --url http://127.0.0.1:PORT --state STATE.json   # prints a fresh access token

`seed` registers two users (verifying their addresses with the links the log
mailer printed to the server log: FLOWPILOT_SMTP_URL unset, JSON log lines).
The first, whose token the fuzzer uses, owns an organization with a workflow
(two versions) and a spare one, a finished execution, a webhook and a schedule trigger, an API
key, the second user as an EDITOR and a pending invitation; it also has an
invitation into the second user's organization to accept, and a spare
organization to delete. It writes email, password, ids and the access token to
STATE.json, and with --schemathesis-config a schemathesis.toml binding those
ids to the arguments that take them. `.ci/fuzz_hooks.py` imports `login` from here to
sign in again when a fuzzed mutation (logout, logoutAll, revokeSession, ...)
ended the session the fuzzer was using.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT = 30


class SetupError(RuntimeError):
    pass


def graphql(url: str, query: str, variables: dict | None = None, token: str | None = None) -> dict:
    """POST one operation to <url>/graphql; answer `data`, raise on any error."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    headers = {"content-type": "application/json", "user-agent": "flowpilot-fuzz-setup"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/graphql", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            payload = json.load(response)
    except urllib.error.HTTPError as err:
        raise SetupError(f"HTTP {err.code}: {err.read()[:500]!r}") from err
    if payload.get("errors"):
        raise SetupError(f"GraphQL errors: {json.dumps(payload['errors'])[:1000]}")
    return payload["data"]


LOGIN = """
mutation($email: String!, $password: String!) {
  login(input: { email: $email, password: $password }) {
    __typename
    ... on AuthPayload { accessToken }
  }
}"""


def login(url: str, email: str, password: str) -> str:
    """Sign in and answer a new access token."""
    result = graphql(url, LOGIN, {"email": email, "password": password})["login"]
    if result.get("__typename") != "AuthPayload":
        raise SetupError(f"login answered {result.get('__typename')}, not tokens")
    return result["accessToken"]


def mailed_token(log_path: Path, email: str, kind: str, prefix: str, deadline_secs: float = 15.0) -> str:
    """The newest token of a `<app url>/<kind>?token=<prefix>...` link the log mailer wrote for `email`."""
    pattern = re.compile(re.escape(kind) + r"\?token=(" + re.escape(prefix) + r"[A-Za-z0-9_\-]+)")
    deadline = time.monotonic() + deadline_secs
    while True:
        token = None
        for line in log_path.read_text(errors="replace").splitlines():
            if email in line:
                match = pattern.search(line)
                if match:
                    token = match.group(1)
        if token:
            return token
        if time.monotonic() > deadline:
            raise SetupError(f"no {kind} link for {email} in {log_path}")
        time.sleep(0.2)


def wait_for_execution(url: str, token: str, execution_id: str, deadline_secs: float = 60.0) -> str:
    """Poll until the execution has finished; answer its status."""
    deadline = time.monotonic() + deadline_secs
    while True:
        status = graphql(url, "query($id: ID!) { execution(id: $id) { status } }", {"id": execution_id}, token)[
            "execution"
        ]["status"]
        if status in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return status
        if time.monotonic() > deadline:
            raise SetupError(f"execution {execution_id} still {status} after {deadline_secs:.0f}s")
        time.sleep(0.2)


def create_user(url: str, log_path: Path, email: str, display_name: str) -> tuple[str, str, str]:
    """Register and verify an account; answer (user id, password, access token)."""
    password = f"fuzz-{secrets.token_urlsafe(18)}"
    data = graphql(
        url,
        """mutation($input: RegisterInput!) { register(input: $input) { user { id } } }""",
        {"input": {"email": email, "password": password, "displayName": display_name}},
    )["register"]
    graphql(
        url,
        """mutation($token: String!) { verifyEmail(input: { token: $token }) { verifiedAt } }""",
        {"token": mailed_token(log_path, email, "verify-email", "fpv_")},
    )
    return data["user"]["id"], password, login(url, email, password)


def create_organization(url: str, token: str, name: str) -> dict:
    return graphql(
        url,
        """mutation($name: String!) { createOrganization(input: { name: $name }) { id slug } }""",
        {"name": name},
        token,
    )["createOrganization"]


def invite(url: str, token: str, organization_id: str, email: str, role: str) -> str:
    return graphql(
        url,
        """mutation($org: ID!, $email: String!, $role: Role!) {
             inviteMember(input: { organizationId: $org, email: $email, role: $role }) { id }
           }""",
        {"org": organization_id, "email": email, "role": role},
        token,
    )["inviteMember"]["id"]


def accept(url: str, token: str, invitation_token: str) -> None:
    graphql(
        url,
        """mutation($token: String!) { acceptInvitation(input: { token: $token }) { id } }""",
        {"token": invitation_token},
        token,
    )


DEFINITION = {
    "steps": [
        {"id": "double", "kind": "TRANSFORM", "config": {"output": {"n": "{{ input.n * 2 }}"}}},
        {"id": "pause", "kind": "DELAY", "needs": ["double"], "config": {"ms": 50}},
        {
            "id": "report",
            "kind": "TRANSFORM",
            "needs": ["pause"],
            "config": {"output": "n is {{ steps.double.output.n }}"},
        },
    ]
}


def seed(url: str, log_path: Path, wait_execution: bool = False) -> dict:
    """Owner A (the fuzzer's user) with an organization full of objects, and a second user B."""
    suffix = secrets.token_hex(4)
    email = f"fuzz-{suffix}@example.com"
    member_email = f"fuzz-member-{suffix}@example.com"
    user_id, password, token = create_user(url, log_path, email, "Fuzz Owner")
    member_id, _, member_token = create_user(url, log_path, member_email, "Fuzz Member")

    org = create_organization(url, token, f"Fuzz Org {suffix}")
    workflow = graphql(
        url,
        """mutation($input: CreateWorkflowInput!) {
             createWorkflow(input: $input) { id activeVersion { id } }
           }""",
        {
            "input": {
                "organizationId": org["id"],
                "name": "Fuzz workflow",
                "description": "seeded by .ci/fuzz_auth.py",
                "definition": DEFINITION,
                "tags": ["fuzz"],
            }
        },
        token,
    )["createWorkflow"]
    spare_workflow = graphql(
        url,
        """mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }""",
        {"input": {"organizationId": org["id"], "name": "Fuzz spare workflow", "definition": DEFINITION}},
        token,
    )["createWorkflow"]
    draft = graphql(
        url,
        """mutation($id: ID!, $definition: WorkflowDefinitionInput!) {
             createWorkflowVersion(input: { workflowId: $id, definition: $definition, message: "draft" }) { id }
           }""",
        {"id": workflow["id"], "definition": DEFINITION},
        token,
    )["createWorkflowVersion"]
    execution = graphql(
        url,
        """mutation($id: ID!) { runWorkflow(input: { workflowId: $id, input: { n: 21 } }) { id } }""",
        {"id": workflow["id"]},
        token,
    )["runWorkflow"]
    execution_status = wait_for_execution(url, token, execution["id"]) if wait_execution else None
    webhook = graphql(
        url,
        """mutation($id: ID!) { createWebhookTrigger(input: { workflowId: $id }) { url trigger { id } } }""",
        {"id": workflow["id"]},
        token,
    )["createWebhookTrigger"]
    schedule = graphql(
        url,
        """mutation($id: ID!) {
             createScheduleTrigger(input: { workflowId: $id, cron: "@daily", timeZone: "UTC", input: { n: 1 } }) { id }
           }""",
        {"id": workflow["id"]},
        token,
    )["createScheduleTrigger"]
    api_key = graphql(
        url,
        """mutation($org: ID!) {
             createApiKey(input: { organizationId: $org, name: "fuzz key", role: EDITOR }) { key apiKey { id } }
           }""",
        {"org": org["id"]},
        token,
    )["createApiKey"]

    # B joins A's organization as an EDITOR; another address stays invited.
    invite(url, token, org["id"], member_email, "EDITOR")
    accept(url, member_token, mailed_token(log_path, member_email, "accept-invitation", "fpi_"))
    pending_invitation = invite(url, token, org["id"], f"fuzz-invitee-{suffix}@example.com", "VIEWER")
    # B's own organization invites A: the fuzzer may accept that invitation once.
    other_org = create_organization(url, member_token, f"Fuzz Other {suffix}")
    invite(url, member_token, other_org["id"], email, "ADMIN")
    invitation_for_owner = mailed_token(log_path, email, "accept-invitation", "fpi_")

    # deleteOrganization gets this one, so that the seeded organization lasts the whole run.
    doomed_org = create_organization(url, token, f"Fuzz Doomed {suffix}")

    sessions = graphql(url, "{ viewer { sessions { edges { node { id } } } } }", None, token)["viewer"]["sessions"]

    return {
        "url": url,
        "email": email,
        "password": password,
        "user_id": user_id,
        "member_user_id": member_id,
        "member_email": member_email,
        "access_token": token,
        "organization_id": org["id"],
        "organization_slug": org["slug"],
        "other_organization_id": other_org["id"],
        "other_organization_slug": other_org["slug"],
        "doomed_organization_id": doomed_org["id"],
        "workflow_id": workflow["id"],
        "spare_workflow_id": spare_workflow["id"],
        "workflow_version_ids": [workflow["activeVersion"]["id"], draft["id"]],
        "execution_id": execution["id"],
        "execution_status": execution_status,
        "webhook_trigger_id": webhook["trigger"]["id"],
        "schedule_trigger_id": schedule["id"],
        "api_key_id": api_key["apiKey"]["id"],
        "pending_invitation_id": pending_invitation,
        "invitation_token_for_owner": invitation_for_owner,
        "session_ids": [edge["node"]["id"] for edge in sessions["edges"]],
    }


def schemathesis_config(state: dict) -> str:
    """A schemathesis.toml whose dictionaries put the seeded ids into the arguments that take them.

    Each binding replaces a generated value with probability 0.7; the rest stays random. The
    mutations that could take the seeded organization away from the fuzzer for the rest of the
    run (deleting it, or removing or demoting its owner) only get a spare organization or the
    other member; .ci/fuzz_hooks.py also re-aims them at send time."""
    dictionaries = {
        "organization_ids": [state["organization_id"], state["other_organization_id"]],
        "organization_slugs": [state["organization_slug"], state["other_organization_slug"]],
        "workflow_ids": [state["workflow_id"], state["spare_workflow_id"]],
        "version_ids": state["workflow_version_ids"],
        "execution_ids": [state["execution_id"]],
        "trigger_ids": [state["webhook_trigger_id"], state["schedule_trigger_id"]],
        "api_key_ids": [state["api_key_id"]],
        "invitation_ids": [state["pending_invitation_id"]],
        "invitation_tokens": [state["invitation_token_for_owner"]],
        "user_ids": [state["user_id"], state["member_user_id"]],
        "session_ids": state["session_ids"],
        "doomed_organization_ids": [state["doomed_organization_id"]],
        "member_user_ids": [state["member_user_id"]],
        # Not ids, but values that get past the first validation more often than random text:
        # cron patterns (some that fire rarely or never) and IANA zones (some with odd offsets).
        "crons": [
            "*/15 9-17 * * MON-FRI",
            "@daily",
            "@hourly",
            "* * * * *",
            "0 0 29 2 *",
            "0 0 31 2 *",
            "30 2 * * SUN",
            "0 0 1 1 *",
            "59 23 31 12 *",
            "0 0 * * 7",
        ],
        "time_zones": [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Pacific/Chatham",
            "Pacific/Kiritimati",
            "America/St_Johns",
            "Etc/GMT+12",
            "Nope/Nowhere",
        ],
        "emails": [
            state["email"],
            state["member_email"],
            "grace@example.com",
            "UPPER.Case+tag@Example.COM",
            "  spaced@example.com  ",
        ],
        "step_ids": ["a", "b", "double", "pause", "report", "step_1"],
        "tags": ["prod", "billing", "a:b.c-d_e"],
    }
    bindings = {
        "Query.organization.id": "organization_ids",
        "Query.organizationBySlug.slug": "organization_slugs",
        "Query.workflow.id": "workflow_ids",
        "Query.workflowVersion.id": "version_ids",
        "Query.execution.id": "execution_ids",
        "*.*.input.organizationId": "organization_ids",
        "*.*.input.workflowId": "workflow_ids",
        "*.*.input.versionId": "version_ids",
        "*.*.input.executionId": "execution_ids",
        "*.*.input.triggerId": "trigger_ids",
        "*.*.input.apiKeyId": "api_key_ids",
        "*.*.input.invitationId": "invitation_ids",
        "*.*.input.userId": "user_ids",
        "*.*.input.sessionId": "session_ids",
        "Mutation.acceptInvitation.input.token": "invitation_tokens",
        "Mutation.deleteOrganization.input.organizationId": "doomed_organization_ids",
        "Mutation.removeMember.input.userId": "member_user_ids",
        "Mutation.updateMemberRole.input.userId": "member_user_ids",
        "Mutation.transferOwnership.input.userId": "member_user_ids",
        "*.*.input.cron": "crons",
        "*.*.input.timeZone": "time_zones",
        "*.*.input.email": "emails",
        "*.*.input.tags[*]": "tags",
        "*.*.input.definition.steps[*].id": "step_ids",
        "*.*.input.definition.steps[*].needs[*]": "step_ids",
        "*.*.definition.steps[*].id": "step_ids",
        "*.*.definition.steps[*].needs[*]": "step_ids",
    }
    lines = ["# Written by .ci/fuzz_auth.py for one fuzz run.", ""]
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for key, name in bindings.items():
        lines.append(f'"{key}" = {{ dictionary = "{name}", probability = 0.7 }}')
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    seed_cmd = sub.add_parser("seed", help="create the fuzz user and its data")
    seed_cmd.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    seed_cmd.add_argument("--log", required=True, type=Path, help="the server's JSON log file")
    seed_cmd.add_argument("--out", required=True, type=Path, help="where to write the state JSON")
    seed_cmd.add_argument("--schemathesis-config", type=Path, help="where to write a schemathesis.toml")
    seed_cmd.add_argument(
        "--wait-execution", action="store_true", help="wait until the seeded execution has finished (needs a worker)"
    )
    login_cmd = sub.add_parser("login", help="print a fresh access token for the seeded user")
    login_cmd.add_argument("--url", required=True)
    login_cmd.add_argument("--state", required=True, type=Path)
    args = parser.parse_args()

    try:
        if args.command == "seed":
            state = seed(args.url, args.log, args.wait_execution)
            args.out.write_text(json.dumps(state, indent=2))
            if args.schemathesis_config:
                args.schemathesis_config.write_text(schemathesis_config(state))
            print(
                f"seeded user {state['email']}, organization {state['organization_id']}, "
                f"workflow {state['workflow_id']}, execution {state['execution_id']} ({state['execution_status']})",
                file=sys.stderr,
            )
        else:
            state = json.loads(args.state.read_text())
            print(login(args.url, state["email"], state["password"]))
    except SetupError as err:
        print(f"fuzz setup failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
