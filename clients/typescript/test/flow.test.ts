// The whole flow of a frontend, through the client, against a real sandbox gateway
// (`audience-gateway sandbox --port 0`: the gateway in front of the simulated vendor API).
// Every request carries the `Origin` of an allowed browser app, so the answers are the ones
// a browser gets through CORS.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";

import {
  type Audience,
  AudienceGateway,
  type NewActivation,
  ProblemError,
  type Versioned,
} from "../src/index.js";

const ORIGIN = "http://app.test";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// The response headers the client reads.
const READ_HEADERS = ["etag", "cache-status", "retry-after", "x-request-id", "idempotent-replayed"];
// The gateway binary; `npm test` runs in clients/typescript.
const binary =
  process.env["AUDIENCE_GATEWAY_BIN"] ?? resolve("../../target/debug/audience-gateway");

const SOME_ACTIVATION: NewActivation = {
  accountId: 501,
  name: "Newsletter - Meta",
  description: "Q1",
  startDate: "2026-01-01T00:00:00Z",
  endDate: "2026-03-31T23:59:59Z",
};

interface Sandbox {
  process: ChildProcess;
  gateway: string;
  upstream: string;
  token: string;
}

/** Starts the sandbox and reads the gateway URL, the upstream URL and the token it prints. */
async function startSandbox(): Promise<Sandbox> {
  assert.ok(existsSync(binary), `${binary} is missing: build it with \`cargo build\``);
  const child = spawn(binary, ["sandbox", "--port", "0"], {
    // The gateway's own settings only, whatever the environment of the test holds.
    env: {
      ...Object.fromEntries(
        Object.entries(process.env).filter(([name]) => !name.startsWith("GATEWAY_")),
      ),
      GATEWAY_SERVER__CORS_ALLOWED_ORIGINS: ORIGIN,
      GATEWAY_LOG__LEVEL: "error",
      // The activation ledger's SQLite file goes to a directory of its own, not the tree.
      GATEWAY_LEDGER__DIR: mkdtempSync(join(tmpdir(), "gateway-ledger-")),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let gateway: string | undefined;
  let upstream: string | undefined;
  let token: string | undefined;
  let tokenNext = false;
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    if (tokenNext) {
      token = line.trim();
      break;
    }
    tokenNext = line.includes("token (all scopes");
    gateway ??= /^\s*gateway:\s+(\S+)/.exec(line)?.[1];
    upstream ??= /^\s*upstream:\s+(\S+)/.exec(line)?.[1];
  }
  lines.close();
  if (!gateway || !upstream || !token) {
    child.kill();
    throw new Error("the sandbox did not print its URLs and token (its log is above)");
  }
  return { process: child, gateway, upstream, token };
}

/** Vendor calls the simulator counted, per operation. */
async function vendorCalls(sandbox: Sandbox): Promise<Record<string, number>> {
  const response = await fetch(`${sandbox.upstream}/__sim/stats`);
  assert.equal(response.status, 200);
  const stats = (await response.json()) as { calls: Record<string, number> };
  return stats.calls;
}

/** Sets the simulator's fault knobs. */
async function simFaults(sandbox: Sandbox, knobs: { down: boolean }): Promise<void> {
  const response = await fetch(`${sandbox.upstream}/__sim/faults`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(knobs),
  });
  assert.equal(response.status, 200);
}

/** Expects `call` to fail with a problem of this status and code; returns it. */
async function problem(call: Promise<unknown>, status: number, code: string) {
  const error = await call.then(
    () => assert.fail(`expected a ${status} ${code} problem`),
    (e: unknown) => e,
  );
  assert.ok(error instanceof ProblemError, `not a ProblemError: ${String(error)}`);
  assert.equal(error.status, status);
  assert.equal(error.code, code);
  assert.equal(error.problem.status, status);
  assert.equal(error.response.headers.get("content-type"), "application/problem+json");
  assert.match(error.requestId ?? "", UUID);
  assert.equal(error.requestId, error.response.headers.get("x-request-id"));
  return error;
}

describe("the client against a sandbox gateway", () => {
  let sandbox: Sandbox;
  let gw: AudienceGateway;
  const responses: Response[] = [];
  let tokenCalls = 0;

  before(async () => {
    sandbox = await startSandbox();
    gw = new AudienceGateway({
      baseUrl: `${sandbox.gateway}/`,
      token: () => {
        tokenCalls += 1;
        return sandbox.token;
      },
      fetch: async (request) => {
        request.headers.set("Origin", ORIGIN);
        const response = await fetch(request);
        responses.push(response);
        return response;
      },
    });
  }, { timeout: 60_000 });

  after(async () => {
    // Unset when the sandbox did not start; startSandbox stopped it then.
    const child = (sandbox as Sandbox | undefined)?.process;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise((done) => child.once("exit", done));
    child.kill("SIGTERM");
    await exited;
  });

  let campaignId: number;
  let created: Audience;
  let read: Versioned<Audience>;

  it("lists platform accounts without their access tokens", async () => {
    const { data, requestId } = await gw.listPlatformAccounts();
    assert.deepEqual(
      data.items.map((a) => a.id),
      [501, 502, 503],
    );
    for (const account of data.items) assert.equal("accessToken" in account, false);
    assert.match(requestId ?? "", UUID);
  });

  it("creates a campaign and an audience in it, with a new Idempotency-Key", async () => {
    const campaign = await gw.createCampaign({ name: "Spring sale" });
    assert.equal(campaign.data.name, "Spring sale");
    campaignId = campaign.data.id;

    const body = { name: "Newsletter", description: "Opt-in list", campaignId };
    const audience = await gw.createAudience(body);
    assert.equal(audience.response.status, 201);
    assert.match(audience.etag, /^"[0-9a-f]+"$/);
    assert.match(audience.idempotencyKey, UUID);
    assert.equal(audience.replayed, false);
    assert.equal(audience.response.headers.get("location"), `/v1/audiences/${audience.data.id}`);
    assert.deepEqual(
      [audience.data.name, audience.data.description, audience.data.campaignId],
      ["Newsletter", "Opt-in list", campaignId],
    );
    created = audience.data;

    const other = await gw.createAudience({ ...body, name: "Newsletter 2" });
    assert.notEqual(other.idempotencyKey, audience.idempotencyKey);
    assert.notEqual(other.data.id, created.id);
  });

  it("reads the audience: the second read is a cache hit with the same ETag", async () => {
    const first = await gw.getAudience(created.id);
    assert.deepEqual(first.data, created);
    assert.match(first.cacheStatus ?? "", /^audience-gateway; fwd=uri-miss; stored/);
    assert.match(first.etag, /^"[0-9a-f]+"$/);
    assert.equal(first.response.headers.get("cache-control"), "private, no-cache");

    const second = await gw.getAudience(created.id);
    assert.match(second.cacheStatus ?? "", /^audience-gateway; hit; ttl=\d+$/);
    assert.equal(second.etag, first.etag);
    assert.deepEqual(second.data, created);
    read = second;
  });

  it("revalidates through the gateway's cache, and refreshes from the vendor on request", async () => {
    const loads = (await vendorCalls(sandbox))["loadAudience"] ?? 0;
    const revalidated = await gw.getAudience(created.id, { revalidate: true });
    assert.match(revalidated.cacheStatus ?? "", /^audience-gateway; hit;/);
    assert.equal((await vendorCalls(sandbox))["loadAudience"] ?? 0, loads);

    const refreshed = await gw.getAudience(created.id, { refresh: true });
    assert.match(refreshed.cacheStatus ?? "", /^audience-gateway; fwd=request; stored/);
    assert.equal(refreshed.etag, read.etag);
    assert.equal((await vendorCalls(sandbox))["loadAudience"] ?? 0, loads + 1);
  });

  it("chains create, update and delete on the ETags the writes answer, with no read", async () => {
    const made = await gw.createAudience({ name: "Chained", campaignId });
    const renamed = await gw.updateAudience(made, { name: "Chained, renamed" });
    assert.equal(renamed.data.name, "Chained, renamed");
    assert.notEqual(renamed.etag, made.etag);
    const described = await gw.updateAudience(renamed, { description: "Second update" });
    await problem(gw.deleteAudience(renamed), 412, "precondition_failed");
    assert.equal((await gw.deleteAudience(described)).response.status, 204);
    await problem(gw.getAudience(made.data.id), 404, "not_found");
  });

  it("updates with If-Match from the read, and a stale ETag gets 412", async () => {
    const updated = await gw.updateAudience(read, { description: "Refreshed weekly" });
    assert.equal(updated.data.description, "Refreshed weekly");
    assert.equal(updated.data.name, "Newsletter");
    assert.notEqual(updated.etag, read.etag);

    const stale = await problem(
      gw.updateAudience(read, { name: "Lost update" }),
      412,
      "precondition_failed",
    );
    assert.equal(stale.retryAfter, undefined);

    const again = await gw.getAudience(created.id);
    assert.equal(again.etag, updated.etag);
    assert.deepEqual(again.data, updated.data);
    read = again;
  });

  it("activates once: a retry with the same key replays without calling the vendor", async () => {
    const before = await vendorCalls(sandbox);
    const key = crypto.randomUUID();
    const first = await gw.activateAudience(created.id, SOME_ACTIVATION, { idempotencyKey: key });
    assert.equal(first.response.status, 201);
    assert.equal(first.replayed, false);
    assert.equal(first.idempotencyKey, key);
    assert.equal(first.audienceChanged, true);
    assert.deepEqual([first.data.audienceId, first.data.accountId], [created.id, 501]);
    assert.match(first.data.flowId, UUID);

    const retry = await gw.activateAudience(created.id, SOME_ACTIVATION, { idempotencyKey: key });
    assert.equal(retry.response.status, 201);
    assert.equal(retry.replayed, true);
    assert.deepEqual(retry.data, first.data);

    const after = await vendorCalls(sandbox);
    assert.equal(after["activateAudience"], (before["activateAudience"] ?? 0) + 1);
  });

  it("surfaces Retry-After when the activation quota is exhausted", async () => {
    const keys = new Set<string>();
    let admitted = 0;
    let limited: ProblemError | undefined;
    // The per-caller burst is a few calls; each call gets a new key, so each is a new one.
    for (let i = 0; i < 20 && limited === undefined; i += 1) {
      try {
        keys.add((await gw.activateAudience(created.id, SOME_ACTIVATION)).idempotencyKey);
        admitted += 1;
      } catch (e) {
        if (!(e instanceof ProblemError)) throw e;
        limited = e;
      }
    }
    assert.ok(limited, "no activation was refused");
    await problem(Promise.reject(limited), 429, "rate_limited");
    assert.ok(Number.isInteger(limited.retryAfter) && (limited.retryAfter ?? 0) > 0);
    assert.equal(String(limited.retryAfter), limited.response.headers.get("retry-after"));
    assert.ok(admitted > 0, "the quota was exhausted before this test");
    assert.equal(keys.size, admitted);
    for (const key of keys) assert.match(key, UUID);
  });

  it("reads insights and uploads of a seeded audience", async () => {
    const insights = await gw.getAudienceInsights(1001);
    assert.equal(insights.data.audienceId, 1001);
    assert.equal(insights.data.state, "READY");
    assert.ok(insights.data.identifiers.length > 0);
    assert.match(insights.etag, /^"[0-9a-f]+"$/);

    const uploads = await gw.listAudienceUploads(1001);
    assert.equal(uploads.data.audienceId, 1001);
    assert.ok(uploads.data.uploads.length > 0);
    assert.equal(uploads.data.uploads.length, uploads.data.totalEvents);
    assert.match(uploads.cacheStatus ?? "", /^audience-gateway; hit;/);
  });

  it("deletes the audience with If-Match; then reading it is a 404 problem", async () => {
    // The activations changed the audience since it was last read.
    await problem(gw.deleteAudience(read), 412, "precondition_failed");
    const current = await gw.getAudience(created.id);
    assert.notEqual(current.etag, read.etag);
    assert.equal(current.data.hasSegments, true);

    const deleted = await gw.deleteAudience(current);
    assert.equal(deleted.response.status, 204);
    assert.match(deleted.requestId ?? "", UUID);

    const gone = await problem(gw.getAudience(created.id), 404, "not_found");
    assert.equal(gone.field, undefined);
    assert.equal(gone.problem.type, "urn:audience-gateway:problem:not_found");
  });

  it("refuses a bad token with a 401 problem", async () => {
    const stranger = new AudienceGateway({
      baseUrl: sandbox.gateway,
      token: () => "not-a-jwt",
    });
    const refused = await problem(stranger.getAudience(1001), 401, "invalid_token");
    assert.match(refused.response.headers.get("www-authenticate") ?? "", /^Bearer /);
  });

  it("reports the field of a validation problem", async () => {
    const invalid = await problem(gw.createCampaign({ name: " " }), 422, "validation_failed");
    assert.equal(invalid.field, "name");
  });

  it("surfaces Retry-After when the vendor is down and the circuit opens", async () => {
    await simFaults(sandbox, { down: true });
    let open: ProblemError | undefined;
    // Each read misses the cache and fails upstream, until the breaker opens.
    for (let id = 2001; id <= 2020 && open === undefined; id += 1) {
      const error = await gw.getAudience(id).then(
        () => assert.fail("read while the vendor is down"),
        (e: unknown) => e,
      );
      assert.ok(error instanceof ProblemError);
      assert.deepEqual([error.status, error.code], [503, "upstream_unavailable"]);
      if (error.retryAfter !== undefined) open = error;
    }
    await simFaults(sandbox, { down: false });
    assert.ok(open, "no 503 carried Retry-After");
    await problem(Promise.reject(open), 503, "upstream_unavailable");
    assert.ok(Number.isInteger(open.retryAfter) && (open.retryAfter ?? 0) > 0);
    assert.equal(String(open.retryAfter), open.response.headers.get("retry-after"));
  });

  it("asked the token provider once per request", () => {
    assert.equal(tokenCalls, responses.length);
  });

  it("got answers a browser at the allowed origin may read", async () => {
    assert.ok(responses.length > 10);
    for (const response of responses) {
      assert.equal(response.headers.get("access-control-allow-origin"), ORIGIN);
      const exposed = (response.headers.get("access-control-expose-headers") ?? "").split(/,\s*/);
      for (const name of READ_HEADERS) {
        assert.ok(exposed.includes(name), `${name} is not exposed to the browser`);
      }
    }
    // The preflight of a conditional update and of an idempotent activation.
    for (const [method, path, headers] of [
      ["PATCH", "/v1/audiences/1001", "authorization,content-type,if-match"],
      ["POST", "/v1/audiences/1001/activations", "authorization,content-type,idempotency-key"],
    ] as const) {
      const preflight = await fetch(`${sandbox.gateway}${path}`, {
        method: "OPTIONS",
        headers: {
          Origin: ORIGIN,
          "Access-Control-Request-Method": method,
          "Access-Control-Request-Headers": headers,
        },
      });
      assert.equal(preflight.status, 200);
      assert.equal(preflight.headers.get("access-control-allow-origin"), ORIGIN);
      const allowed = preflight.headers.get("access-control-allow-headers") ?? "";
      for (const name of headers.split(",")) {
        assert.ok(allowed.includes(name), `${name} is not allowed`);
      }
    }
  });
});

// Compile-time checks, never run: `tsc` fails if the generated types accept these calls, so a
// contract change shows up as a type error in the frontend.
export function refusedByTheTypes(gw: AudienceGateway): void {
  // @ts-expect-error campaignId is required
  void gw.createAudience({ name: "No campaign" });
  // @ts-expect-error a patch names a field to change
  void gw.updateAudience(1001, {});
  // @ts-expect-error accountId is a number
  void gw.activateAudience(1001, { ...SOME_ACTIVATION, accountId: "501" });
}
