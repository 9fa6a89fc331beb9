"""Schemathesis hooks for FlowPilot's fuzz stage (.ci/fuzz.sh), loaded through SCHEMATHESIS_HOOKS.

Written against Schemathesis 4.32.5 (the version .ci/fuzz.sh pins):

* `flowpilot_graphql_contract`, a custom check (`@schemathesis.check`, enabled by naming it in
  `--checks`). It fails a response that is a 5xx, is not JSON, is not a GraphQL response (an
  object, or for a batch a list of objects, each with `data` or `errors`), or carries an error
  whose `extensions.code` is INTERNAL, missing, or not one of the codes the README documents.

* a `filter_failure` hook. The built-in `not_a_server_error` check stays on for HTTP 5xx, but for
  GraphQL it also calls every error raised in a resolver (one with a `path`) a "GraphQL server
  error" unless its code is one of a few Apollo spellings (BAD_USER_INPUT, ...). FlowPilot answers
  UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, CONFLICT and RATE_LIMITED from resolvers by design, so
  that verdict is dropped here and `flowpilot_graphql_contract` judges the error codes instead.

* with FLOWPILOT_FUZZ_STATE set (the authenticated pass): an auth provider that sends the seeded
  user's bearer token, and signs in again (via .ci/fuzz_auth.py) when a fuzzed mutation such as
  `logout`, `logoutAll` or `revokeSession` ended the session.

* with FLOWPILOT_FUZZ_STATS set: counts of requests, statuses and error codes, written there as
  JSON at exit so .ci/fuzz.sh can report them.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import sys
import threading
import urllib.request

import schemathesis
from schemathesis.graphql.checks import GraphQLServerError

# The codes of the README's "Errors" table; INTERNAL is the server's fault and fails the run.
EXPECTED_CODES = frozenset(
    {
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "NOT_FOUND",
        "BAD_USER_INPUT",
        "CONFLICT",
        "RATE_LIMITED",
        "PERSISTED_QUERY_NOT_FOUND",
        "PERSISTED_QUERY_NOT_ALLOWED",
    }
)

# FLOWPILOT_FUZZ_CHECK_SELFTEST=<code> additionally fails on errors with that code: a way to see
# that the custom check fires (e.g. =UNAUTHENTICATED in the anonymous pass). Never set in CI.
SELFTEST_CODE = os.environ.get("FLOWPILOT_FUZZ_CHECK_SELFTEST") or None


def _payloads(response) -> list:
    """The GraphQL response objects in a body (one, or a batch); AssertionError if not GraphQL."""
    try:
        payload = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        snippet = response.content[:200]
        raise AssertionError(f"invalid GraphQL response: body is not JSON (HTTP {response.status_code}): {snippet!r}")
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise AssertionError("invalid GraphQL response: an empty batch")
    for item in items:
        if not isinstance(item, dict) or ("data" not in item and "errors" not in item):
            raise AssertionError(
                f"invalid GraphQL response: not an object with `data` or `errors`: {json.dumps(item)[:300]}"
            )
        if "errors" in item and not isinstance(item["errors"], list):
            raise AssertionError(f"invalid GraphQL response: `errors` is not a list: {json.dumps(item)[:300]}")
    return items


def _error_code(error) -> str | None:
    if not isinstance(error, dict):
        return None
    extensions = error.get("extensions")
    return extensions.get("code") if isinstance(extensions, dict) else None


@schemathesis.check
def flowpilot_graphql_contract(ctx, response, case):
    """5xx, non-GraphQL bodies and INTERNAL (or undocumented) error codes fail the run."""
    if response.status_code >= 500:
        raise AssertionError(f"HTTP {response.status_code} from /graphql")
    for item in _payloads(response):
        for error in item.get("errors") or []:
            code = _error_code(error)
            message = error.get("message") if isinstance(error, dict) else error
            path = error.get("path") if isinstance(error, dict) else None
            if code == "INTERNAL":
                raise AssertionError(f"GraphQL error with extensions.code INTERNAL at {path}: {message}")
            if code is None:
                raise AssertionError(f"GraphQL error without extensions.code at {path}: {message}")
            if code not in EXPECTED_CODES:
                raise AssertionError(f"GraphQL error with undocumented extensions.code {code} at {path}: {message}")
            if SELFTEST_CODE is not None and code == SELFTEST_CODE:
                raise AssertionError(f"self-test: GraphQL error with extensions.code {code} at {path}: {message}")
    return None


# ---------------------------------------------------------------------------------------------
# The JSON scalar (workflow inputs, step configs): Schemathesis has no strategy for custom
# scalars. Any JSON value, with strings often minijinja templates and objects often shaped
# like the step configs of `StepKind`, so that definitions get past the first validation.

from hypothesis import strategies as st  # noqa: E402
import graphql  # noqa: E402
from schemathesis.graphql import nodes  # noqa: E402

_TEMPLATES = st.sampled_from(
    [
        "{{ input.n }}",
        "{{ input.n * 2 }}",
        "{{ input }}",
        "{{ steps.a.output }}",
        "{{ steps.a.output.n + 1 }}",
        "n is {{ input.n }}",
        "{{ input.missing.deeper }}",
        "{{ 1 / 0 }}",
        "{{ input.n | upper }}",
        "{{ range(100000) | list | length }}",
        "{% for x in input.items %}{{ x }}{% endfor %}",
        "{{",
        "}}",
        "{% if %}",
        "{{ input.n > 1 }}",
        "input.n > 1",
        "true",
    ]
)
_NAMES = st.from_regex(r"\A[_a-zA-Z][_a-zA-Z0-9]{0,8}\Z", fullmatch=True) | st.sampled_from(
    ["output", "ms", "message", "if", "condition", "method", "url", "headers", "body", "n", "items"]
)
_STRINGS = st.one_of(_TEMPLATES, st.text(max_size=30))


def _object(fields: dict) -> graphql.ObjectValueNode:
    return nodes.Object([graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v) for k, v in fields.items()])


_LEAVES = st.one_of(
    st.just(graphql.NullValueNode()),
    st.booleans().map(nodes.Boolean),
    st.integers().map(nodes.Int),
    st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
    _STRINGS.map(nodes.String),
)
_ANY_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4).map(nodes.List) | st.dictionaries(_NAMES, inner, max_size=4).map(_object),
    max_leaves=12,
)
# Configs of each step kind, with loopback-only URLs (the fuzzed server runs no engine anyway).
_STEP_CONFIGS = st.one_of(
    st.fixed_dictionaries({"output": _ANY_JSON}).map(_object),
    st.fixed_dictionaries({"ms": st.integers(min_value=-1, max_value=10**12).map(nodes.Int)}).map(_object),
    st.fixed_dictionaries({"message": _STRINGS.map(nodes.String)}).map(_object),
    st.fixed_dictionaries({"if": _STRINGS.map(nodes.String)}).map(_object),
    st.fixed_dictionaries(
        {
            "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "get", "BREW"]).map(nodes.String),
            "url": st.sampled_from(
                ["http://127.0.0.1:9/x", "http://localhost:9/{{ input.n }}", "ftp://127.0.0.1/", "not a url", ""]
            ).map(nodes.String),
        },
        optional={"headers": _ANY_JSON, "body": _ANY_JSON},
    ).map(_object),
)
schemathesis.graphql.scalar("JSON", st.one_of(_STEP_CONFIGS, _ANY_JSON))


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    # Keep everything except the built-in "GraphQL server error" verdict on resolver errors
    # (see the module docstring); 5xx, malformed JSON and schema violations are kept.
    return not isinstance(failure, GraphQLServerError)


# ---------------------------------------------------------------------------------------------
# Statistics

_STATS_PATH = os.environ.get("FLOWPILOT_FUZZ_STATS")
_stats_lock = threading.Lock()
_stats = {
    "requests": 0,
    "statuses": collections.Counter(),
    "error_codes": collections.Counter(),
    "error_messages": collections.Counter(),
    "operation_errors": collections.defaultdict(collections.Counter),
    "operations": collections.Counter(),
    "ok_operations": collections.Counter(),
    "relogins": 0,
}


def _count(case, response) -> None:
    codes = []
    messages = []
    data_ok = False
    try:
        for item in _payloads(response):
            errors = item.get("errors") or []
            codes.extend(str(_error_code(e)) for e in errors)
            messages.extend(
                f"{_error_code(e)}: {str(e.get('message'))[:100]}" for e in errors if isinstance(e, dict)
            )
            data_ok = data_ok or (not errors and item.get("data") is not None)
    except AssertionError:
        codes.append("<not-graphql>")
    label = getattr(case.operation, "label", "?")
    with _stats_lock:
        _stats["requests"] += 1
        _stats["statuses"][str(response.status_code)] += 1
        _stats["error_codes"].update(codes)
        _stats["error_messages"].update(messages)
        _stats["operation_errors"][label].update(messages)
        _stats["operations"][label] += 1
        if data_ok:
            _stats["ok_operations"][label] += 1


def _write_stats() -> None:
    if not _STATS_PATH:
        return
    with _stats_lock:
        summary = dict(_stats)
        summary["operations_tested"] = len(_stats["operations"])
        summary["operations_with_a_clean_answer"] = len(_stats["ok_operations"])
        summary["operations"] = dict(_stats["operations"].most_common())
        summary["ok_operations"] = dict(_stats["ok_operations"].most_common())
        summary["error_messages"] = dict(_stats["error_messages"].most_common(40))
        summary["operation_errors"] = {
            label: dict(counter.most_common(5)) for label, counter in sorted(_stats["operation_errors"].items())
        }
    with open(_STATS_PATH, "w") as out:
        json.dump(summary, out, indent=2, default=dict)


atexit.register(_write_stats)


# ---------------------------------------------------------------------------------------------
# Authentication (authenticated pass only)

_STATE_PATH = os.environ.get("FLOWPILOT_FUZZ_STATE")

if _STATE_PATH:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fuzz_auth import login  # noqa: E402  (a sibling file, standard library only)

    with open(_STATE_PATH) as state_file:
        _STATE = json.load(state_file)
    _token_lock = threading.Lock()
    _token = {"value": _STATE["access_token"], "stale": False}

    def _session_alive(token: str) -> bool:
        """Whether `token` still signs in: `viewer` answers UNAUTHENTICATED once its session ended."""
        request = urllib.request.Request(
            f"{_STATE['url']}/graphql",
            data=json.dumps({"query": "{ viewer { id } }"}).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                payload = json.load(answer)
        except Exception:
            return True  # not our question to answer here; the checks see the server's state
        return not any(_error_code(e) == "UNAUTHENTICATED" for e in payload.get("errors") or [])

    # refresh_interval=None: `get` runs for every case, and keeps the token until it stops working.
    @schemathesis.auth(refresh_interval=None)
    class FlowPilotBearer:
        def get(self, case, ctx):
            with _token_lock:
                if _token["stale"]:
                    _token["value"] = login(_STATE["url"], _STATE["email"], _STATE["password"])
                    _token["stale"] = False
                    with _stats_lock:
                        _stats["relogins"] += 1
                return _token["value"]

        def set(self, case, data, ctx):
            headers = dict(case.headers or {})
            headers["Authorization"] = f"Bearer {data}"
            case.headers = headers

    # The fuzzer must not take the seeded organization away from its own user for the rest of
    # the run: these mutations aimed at it are re-aimed, at send time, at the spare organization
    # (or at the other member instead of the fuzzer's user); archiving is re-aimed from the
    # seeded workflow at the spare one, so runWorkflow keeps reaching the engine's queue.
    # Everything else goes out as drawn.
    _ORG = _STATE["organization_id"]
    _SPARE_ORG = _STATE["doomed_organization_id"]
    _LEAVING = ("leaveOrganization", "transferOwnership", "deleteOrganization")
    _DEMOTING = ("removeMember", "updateMemberRole")

    def _guard_seeded_organization(case) -> None:
        body = case.body
        if not isinstance(body, str):
            return
        field = getattr(case.operation.definition, "field_name", "")
        if field == "archiveWorkflow":
            case.body = body.replace(_STATE["workflow_id"], _STATE["spare_workflow_id"])
        elif _ORG not in body:
            return
        elif field in _LEAVING:
            case.body = body.replace(_ORG, _SPARE_ORG)
        elif field in _DEMOTING and _STATE["user_id"] in body:
            case.body = body.replace(_STATE["user_id"], _STATE["member_user_id"])

    def _note_session(case, response) -> None:
        sent = (case.headers or {}).get("Authorization", "")
        try:
            items = _payloads(response)
        except AssertionError:
            return
        unauthenticated = any(
            _error_code(e) == "UNAUTHENTICATED" for item in items for e in item.get("errors") or []
        )
        if not unauthenticated:
            return
        with _token_lock:
            if _token["stale"] or sent != f"Bearer {_token['value']}":
                return
            if not _session_alive(_token["value"]):
                _token["stale"] = True


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if _STATE_PATH:
        _guard_seeded_organization(case)


@schemathesis.hook
def after_call(ctx, case, response):
    _count(case, response)
    if _STATE_PATH:
        _note_session(case, response)
