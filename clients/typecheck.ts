// A client's use of the types graphql-codegen derives from FlowPilot's schema and README
// operations. It is only type-checked (tsc --noEmit --strict), never run: each function
// compiles only when the generated types say what the API answers, and each
// `@ts-expect-error` line compiles only when the type is as narrow as it should be (a type
// that fell back to `any` would make the expected error vanish and fail the check).
//
// The README operations used here: `Register` (mutation register), `Login` (mutation login)
// and `Dashboard` (subscription organizationExecutionEvents).
import type {
  DashboardSubscription,
  DashboardSubscriptionVariables,
  LoginMutation,
  RegisterMutation,
} from './.generated/graphql.js';
import type { Execution, ExecutionStatus, Scalars, StreamResyncReason } from './.generated/schema-types.js';
import type { JsonValue } from './json-value.js';

// DateTime is an RFC 3339 string, not a Date and not `any`.
export function tokenExpiry(answer: RegisterMutation): number {
  const expiresAt: string = answer.register.accessTokenExpiresAt;
  // @ts-expect-error DateTime is a string, not a Date
  const notADate: Date = answer.register.accessTokenExpiresAt;
  void notADate;
  const userId: string = answer.register.user.id;
  void userId;
  return Date.parse(expiresAt);
}

// `login` answers a union: narrowing on __typename reaches each member's fields.
export function signedIn(answer: LoginMutation): string | null {
  const result = answer.login;
  switch (result.__typename) {
    case 'AuthPayload':
      return result.accessToken;
    case 'MfaChallenge': {
      const expiresAt: string = result.expiresAt;
      void expiresAt;
      // @ts-expect-error a challenge holds no access token
      void result.accessToken;
      return null;
    }
    default: {
      const unreachable: never = result;
      return unreachable;
    }
  }
}

// Enums are string literal unions; a switch over every value is exhaustive.
export function finished(status: ExecutionStatus): boolean {
  switch (status) {
    case 'QUEUED':
    case 'RUNNING':
      return false;
    case 'SUCCEEDED':
    case 'FAILED':
    case 'CANCELLED':
    case 'TIMED_OUT':
      return true;
    default: {
      const unreachable: never = status;
      return unreachable;
    }
  }
}

// The dashboard's union of events and resync notices, and its variables.
export function describeDashboardMessage(message: DashboardSubscription): string {
  const event = message.organizationExecutionEvents;
  if (event.__typename === 'ExecutionEvent') {
    const seq: number = event.seq;
    const at: string = event.occurredAt;
    return `${event.executionId}#${seq} ${event.kind} ${finished(event.executionStatus) ? 'done' : 'open'} at ${at}`;
  }
  const reason: StreamResyncReason = event.reason;
  // @ts-expect-error an enum is not any string
  const notAReason: StreamResyncReason = 'SOMETHING_ELSE';
  void notAReason;
  return `resync (${reason}) at ${event.occurredAt}`;
}

export const dashboardVariables: DashboardSubscriptionVariables = { org: 'organization id' };
// @ts-expect-error the organization is required
export const noOrganization: DashboardSubscriptionVariables = {};

// JSON is any JSON value, nullable where the schema says so.
export function executionOutput(execution: Pick<Execution, 'output' | 'startedAt'>): JsonValue {
  // @ts-expect-error the output is null until the execution succeeds
  const always: NonNullable<JsonValue> = execution.output;
  void always;
  // @ts-expect-error a nullable DateTime may be null
  const started: string = execution.startedAt;
  void started;
  const json: Scalars['JSON']['output'] = { n: 42, tags: ['a'], nested: { ok: true, none: null } };
  // @ts-expect-error a function is not JSON
  const notJson: Scalars['JSON']['output'] = () => 1;
  void notJson;
  return execution.output ?? json;
}
