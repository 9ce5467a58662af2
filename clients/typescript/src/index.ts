/**
 * The typed client of audience-gateway.
 *
 * `schema.ts` is generated from the gateway's OpenAPI document (`npm run generate`) and
 * types every path, parameter and body; openapi-fetch turns it into typed `fetch` calls.
 * This module adds only what the contract cannot express by itself:
 * - a bearer token asked from a provider on every request, so a refreshed token is used;
 * - errors thrown as {@link ProblemError}, the RFC 9457 body typed, with `Retry-After`;
 * - an `Idempotency-Key` made for every create and activation unless the caller passes one;
 * - `If-Match` taken from the `ETag` of an audience read, created or updated before, so
 *   create, update and delete chain without a read in between;
 * - reads that revalidate with the gateway's cache, apart from a forced vendor refresh;
 * - audience ids as {@link AudienceId}: 64-bit, so also a `bigint` or decimal text.
 * `AudienceGateway.raw` is the openapi-fetch client itself, with the same token, for
 * anything this module does not wrap.
 */
import createClient, { type Client } from "openapi-fetch";

import type { components, paths } from "./schema.js";

/**
 * An audience id. The gateway's ids are 64-bit integers (JSON numbers, `int64` in the spec).
 * A JavaScript `number` holds them exactly only up to `Number.MAX_SAFE_INTEGER`
 * (2^53 − 1): for larger ids pass a `bigint` or the decimal text, e.g. from
 * {@link idFromLocation}. Ids inside response bodies are parsed by `JSON.parse` and so
 * lose digits above that bound; read such an id from the create's `Location` instead.
 */
export type AudienceId = number | bigint | string;

/** The exact id (as text) at the end of a `Location` such as `/v1/audiences/3000000001`. */
export function idFromLocation(location: string): string | undefined {
  const last = location.split("?")[0]?.split("/").filter((part) => part !== "").pop();
  return last !== undefined && /^[0-9]+$/.test(last) ? last : undefined;
}

export type { components, paths } from "./schema.js";

type Schemas = components["schemas"];
export type Activation = Schemas["Activation"];
export type Audience = Schemas["Audience"];
export type AudiencePatch = Schemas["AudiencePatch"];
export type Campaign = Schemas["Campaign"];
export type Insights = Schemas["Insights"];
export type NewActivation = Schemas["NewActivation"];
export type NewAudience = Schemas["NewAudience"];
export type NewCampaign = Schemas["NewCampaign"];
export type PlatformAccount = Schemas["PlatformAccount"];
export type PlatformAccountList = Schemas["PlatformAccountList"];
export type Problem = Schemas["Problem"];
export type Uploads = Schemas["Uploads"];

/** Returns the bearer token to send; called once per request. */
export type TokenProvider = () => string | Promise<string>;

/** How to reach the gateway. */
export interface GatewayOptions {
  /** The gateway's origin, e.g. `https://audiences.example.com` (paths start with `/v1`). */
  baseUrl: string;
  /** The caller's JWT, without the `Bearer ` prefix. */
  token: TokenProvider;
  /** The `fetch` to use; the global one by default. */
  fetch?: (request: Request) => Promise<Response>;
  /** Makes the `Idempotency-Key` of a create or activation; `crypto.randomUUID` by default. */
  newIdempotencyKey?: () => string;
}

/** A successful answer: the typed body and the response it came in. */
export interface Reply<T> {
  data: T;
  /** The gateway's `X-Request-Id`: quote it when reporting a problem. */
  requestId: string | undefined;
  response: Response;
}

/** An audience representation with its `ETag`, to make a later write conditional. */
export interface Versioned<T> extends Reply<T> {
  etag: string;
}

/** A read served through the gateway's cache. */
export interface Cached<T> extends Versioned<T> {
  /** RFC 9211 `Cache-Status`, e.g. `audience-gateway; hit; ttl=12`. */
  cacheStatus: string | undefined;
}

/** The answer to an activation: the audience changed at the vendor. */
export interface Activated extends Idempotent<Activation> {
  /**
   * Always `true`: an activation changes the audience (its activation status), so an
   * `ETag` read, created or updated before it is stale and a conditional update or delete
   * with it fails with `precondition_failed`. Read the audience again first.
   */
  readonly audienceChanged: true;
}

/** The answer to a create or activation sent with an `Idempotency-Key`. */
export interface Idempotent<T> extends Reply<T> {
  /** The key sent: pass it again to retry the same call safely. */
  idempotencyKey: string;
  /** Whether the gateway replayed the stored answer of an earlier call with this key. */
  replayed: boolean;
}

/** Options of a create or activation. */
export interface IdempotencyOptions {
  /** Reuse a key to retry a call whose answer was lost; a new key is made when absent. */
  idempotencyKey?: string;
}

/** Options of a cached read. */
export interface ReadOptions {
  /**
   * Revalidate any copy a cache between the page and the gateway holds (`fetch`'s
   * `cache: "no-cache"`): the read is answered by the gateway, from its own cache, which
   * every write through the gateway keeps current. A browser revalidates the gateway's
   * `Cache-Control: private, no-cache` answers anyway; this also covers a copy kept under
   * another policy.
   */
  revalidate?: boolean;
  /**
   * Force a read from the vendor (`Cache-Control: upstream-refresh`) that replaces the
   * gateway's cached copy: for an audience changed outside the gateway. Costs a vendor call.
   */
  refresh?: boolean;
}

/**
 * An error answer of the gateway: its RFC 9457 problem, typed. An answer without the body
 * it should have (a proxy's error page, say) becomes a problem with `code`
 * `unexpected_response`.
 */
export class ProblemError extends Error {
  override readonly name = "ProblemError";
  readonly status: number;
  /** The gateway's stable error code, e.g. `precondition_failed`. */
  readonly code: string;
  /** The request field at fault, for validation errors. */
  readonly field: string | undefined;
  readonly requestId: string | undefined;
  /** Seconds to wait before retrying, from `Retry-After` on a 429 or 503. */
  readonly retryAfter: number | undefined;
  readonly problem: Problem;
  readonly response: Response;

  constructor(problem: Problem, response: Response) {
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
    this.problem = problem;
    this.response = response;
    this.status = problem.status;
    this.code = problem.code;
    this.field = problem.field ?? undefined;
    this.requestId = problem.requestId ?? header(response, "x-request-id");
    this.retryAfter =
      response.status === 429 || response.status === 503
        ? retryAfterSeconds(header(response, "retry-after"))
        : undefined;
  }

  /** The error for a non-2xx response whose body openapi-fetch parsed as `body`. */
  static from(body: unknown, response: Response): ProblemError {
    const problem = isProblem(body)
      ? body
      : {
          type: "about:blank",
          title: response.statusText,
          status: response.status,
          detail: `the gateway answered ${response.status} without the expected body`,
          code: "unexpected_response",
        };
    return new ProblemError(problem, response);
  }
}

/** The typed client. Every method throws {@link ProblemError} on an error answer. */
export class AudienceGateway {
  /** The generated openapi-fetch client, sending the token on every request. */
  readonly raw: Client<paths>;
  private readonly newKey: () => string;

  constructor(options: GatewayOptions) {
    this.raw = createClient<paths>({
      baseUrl: options.baseUrl,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    this.raw.use({
      async onRequest({ request }) {
        request.headers.set("Authorization", `Bearer ${await options.token()}`);
        return request;
      },
    });
    this.newKey = options.newIdempotencyKey ?? (() => crypto.randomUUID());
  }

  /** `GET /v1/platform-accounts`: the accounts an audience can be activated on. */
  async listPlatformAccounts(): Promise<Reply<PlatformAccountList>> {
    return reply(await this.raw.GET("/v1/platform-accounts"));
  }

  /** `POST /v1/campaigns`. */
  async createCampaign(body: NewCampaign): Promise<Reply<Campaign>> {
    return reply(await this.raw.POST("/v1/campaigns", { body }));
  }

  /**
   * `POST /v1/audiences`, with an `Idempotency-Key`. The answer carries the new audience's
   * `ETag`: pass it to {@link updateAudience} or {@link deleteAudience} without a read.
   */
  async createAudience(
    body: NewAudience,
    options: IdempotencyOptions = {},
  ): Promise<Idempotent<Audience> & Versioned<Audience>> {
    const answer = await this.idempotent(options, (header) =>
      this.raw.POST("/v1/audiences", { body, params: { header } }),
    );
    return versioned(answer);
  }

  /**
   * `GET /v1/audiences/{id}`, with its `ETag` and `Cache-Status`. Served from the gateway's
   * cache unless `options.refresh`; see {@link ReadOptions}.
   */
  async getAudience(id: AudienceId, options: ReadOptions = {}): Promise<Cached<Audience>> {
    const params = { path: { id: pathId(id) }, header: readHeaders(options) };
    return cached(await this.raw.GET("/v1/audiences/{id}", { params, ...readInit(options) }));
  }

  /** `GET /v1/audiences/{id}/insights`. */
  async getAudienceInsights(id: AudienceId, options: ReadOptions = {}): Promise<Cached<Insights>> {
    const params = { path: { id: pathId(id) }, header: readHeaders(options) };
    return cached(
      await this.raw.GET("/v1/audiences/{id}/insights", { params, ...readInit(options) }),
    );
  }

  /** `GET /v1/audiences/{id}/uploads`: upload events, newest first. */
  async listAudienceUploads(id: AudienceId, options: ReadOptions = {}): Promise<Cached<Uploads>> {
    const params = { path: { id: pathId(id) }, header: readHeaders(options) };
    return cached(
      await this.raw.GET("/v1/audiences/{id}/uploads", { params, ...readInit(options) }),
    );
  }

  /**
   * `PATCH /v1/audiences/{id}`. Given an audience read, created or updated before, the
   * update is sent with its `ETag` in `If-Match` and fails with `precondition_failed` (412)
   * if it changed since. The answer carries the new `ETag`, for the next write.
   */
  async updateAudience(
    target: AudienceId | Versioned<Audience>,
    patch: AudiencePatch,
  ): Promise<Versioned<Audience>> {
    const params = { path: { id: audienceId(target) }, header: ifMatch(target) };
    const answer = await this.raw.PATCH("/v1/audiences/{id}", { params, body: patch });
    return versioned(reply(answer));
  }

  /** `DELETE /v1/audiences/{id}`; conditional, like {@link updateAudience}, given a read. */
  async deleteAudience(target: AudienceId | Versioned<Audience>): Promise<Reply<undefined>> {
    const params = { path: { id: audienceId(target) }, header: ifMatch(target) };
    const { error, response } = await this.raw.DELETE("/v1/audiences/{id}", { params });
    if (error !== undefined || !response.ok) throw ProblemError.from(error, response);
    return { data: undefined, requestId: header(response, "x-request-id"), response };
  }

  /**
   * `POST /v1/audiences/{id}/activations`, with an `Idempotency-Key`. The audience changes
   * at the vendor ({@link Activated.audienceChanged}): read it again before a conditional
   * write.
   */
  async activateAudience(
    id: AudienceId,
    body: NewActivation,
    options: IdempotencyOptions = {},
  ): Promise<Activated> {
    const answer = await this.idempotent(options, (header) =>
      this.raw.POST("/v1/audiences/{id}/activations", {
        body,
        params: { path: { id: pathId(id) }, header },
      }),
    );
    return { ...answer, audienceChanged: true };
  }

  /** Sends a call of an idempotent operation with the caller's key or a new one. */
  private async idempotent<T, E>(
    options: IdempotencyOptions,
    send: (header: { "Idempotency-Key": string }) => Promise<Outcome<T, E>>,
  ): Promise<Idempotent<T>> {
    const idempotencyKey = options.idempotencyKey ?? this.newKey();
    const answer = reply(await send({ "Idempotency-Key": idempotencyKey }));
    const replayed = header(answer.response, "idempotent-replayed") === "?1";
    return { ...answer, idempotencyKey, replayed };
  }
}

/** What openapi-fetch resolves to: a typed body, or a typed error body. */
type Outcome<T, E> =
  | { data: T; error?: never; response: Response }
  | { data?: never; error: E; response: Response };

function reply<T, E>(outcome: Outcome<T, E>): Reply<T> {
  const { data, error, response } = outcome;
  // Every answer but a delete's has a body: one without is unexpected.
  if (error !== undefined || !response.ok || data === undefined) {
    throw ProblemError.from(error, response);
  }
  return { data, requestId: header(response, "x-request-id"), response };
}

/** `answer` with its `ETag`. */
function versioned<A extends Reply<unknown>>(answer: A): A & { etag: string } {
  const etag = header(answer.response, "etag");
  if (etag === undefined) {
    // A browser hides response headers the gateway's CORS does not expose.
    throw new Error("the gateway's answer carries no readable ETag header");
  }
  return { ...answer, etag };
}

function cached<T, E>(outcome: Outcome<T, E>): Cached<T> {
  const answer = versioned(reply(outcome));
  return { ...answer, cacheStatus: header(answer.response, "cache-status") };
}

function readHeaders(options: ReadOptions): { "Cache-Control"?: string } {
  return options.refresh ? { "Cache-Control": "upstream-refresh" } : {};
}

function readInit(options: ReadOptions): { cache?: RequestCache } {
  return options.revalidate ? { cache: "no-cache" } : {};
}

function audienceId(target: AudienceId | Versioned<Audience>): number {
  return isVersioned(target) ? target.data.id : pathId(target);
}

function ifMatch(target: AudienceId | Versioned<Audience>): { "If-Match"?: string } {
  return isVersioned(target) ? { "If-Match": target.etag } : {};
}

function isVersioned(target: AudienceId | Versioned<Audience>): target is Versioned<Audience> {
  return typeof target === "object";
}

/**
 * An id as a path parameter. The spec types it as a number; the path carries its decimal
 * text, so a `bigint` or a string of digits is sent exactly as given.
 */
function pathId(id: AudienceId): number {
  return id as number;
}

function header(response: Response, name: string): string | undefined {
  return response.headers.get(name) ?? undefined;
}

function isProblem(body: unknown): body is Problem {
  if (typeof body !== "object" || body === null) return false;
  const fields = body as Record<string, unknown>;
  return (
    typeof fields["status"] === "number" &&
    ["type", "title", "detail", "code"].every((name) => typeof fields[name] === "string")
  );
}

/** `Retry-After` as seconds: delay-seconds, or an HTTP date (RFC 9110, 10.2.3). */
function retryAfterSeconds(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}
