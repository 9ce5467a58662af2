// The packed TypeScript client in a real browser, as a frontend uses it: the page
// (tests/browser/client-page, bundled with esbuild from the `npm pack` tarball) is served on
// one origin, `audience-gateway sandbox` on another with the page's origin allowed in CORS,
// and Debian's headless Chromium runs the audience flow through the browser's own HTTP
// cache: create, reads (the second one revalidated and answered by the gateway's cache),
// update and read-after-write, a 412 after another caller's change and its recovery, an
// activation, delete then 404, a token switch (the second token's scopes are checked), an
// expired token (401, never a cached 200), a page on an origin that is not allowed (refused),
// and no console errors beyond the answers the flow expects.
//
// Run by scripts/test-client.sh:
//   PAGE_DIR=... AUDIENCE_GATEWAY_BIN=... node tests/browser/client-flow.mjs
// PAGE_DIR holds index.html, bundle.js and node_modules with playwright-core; CHROMIUM
// defaults to /usr/bin/chromium. No tool downloads a browser of its own.

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { launchChromium } from './chromium.mjs';

const pageDir = process.env.PAGE_DIR;
const binary = process.env.AUDIENCE_GATEWAY_BIN;
if (!pageDir || !binary) {
  console.error('PAGE_DIR and AUDIENCE_GATEWAY_BIN must be set');
  process.exit(2);
}
const { chromium } = createRequire(join(pageDir, 'package.json'))('playwright-core');

/** Serves the page's files on 127.0.0.1 at a free port; resolves to its origin. */
async function servePage() {
  const types = { html: 'text/html', js: 'text/javascript' };
  const server = createServer((req, res) => {
    const name = new URL(req.url, 'http://page').pathname.slice(1) || 'index.html';
    if (!['index.html', 'bundle.js'].includes(name)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': types[name.split('.').pop()] });
    res.end(readFileSync(join(pageDir, name)));
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

const gatewayEnv = {
  ...Object.fromEntries(Object.entries(process.env).filter(([n]) => !n.startsWith('GATEWAY_'))),
  GATEWAY_LOG__LEVEL: 'error',
  // An expired token is refused as soon as it expires.
  GATEWAY_AUTH__LEEWAY_SECS: '0',
};

/** Mints a sandbox token. */
function mint(...args) {
  return execFileSync(binary, ['token', ...args], { env: gatewayEnv }).toString().trim();
}

/** Starts the sandbox allowing `origin`; resolves to its gateway URL. */
async function startSandbox(origin, ledgerDir) {
  const child = spawn(binary, ['sandbox', '--port', '0'], {
    env: {
      ...gatewayEnv,
      GATEWAY_SERVER__CORS_ALLOWED_ORIGINS: origin,
      GATEWAY_LEDGER__DIR: ledgerDir,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    const url = /^\s*gateway:\s+(\S+)/.exec(line)?.[1];
    if (url) {
      lines.close();
      return { child, url };
    }
  }
  throw new Error('the sandbox did not print its URL (its log is above)');
}

/** Requests the gateway answered (not counting preflights and metrics scrapes). */
async function gatewayAnswers() {
  const text = await (await fetch(`${gatewayUrl}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^audience_gateway_http_request_duration_seconds_count\{(.*)\} (\d+)$/.exec(line);
    if (m && !m[1].includes('method="OPTIONS"') && !m[1].includes('route="/metrics"')) {
      total += Number(m[2]);
    }
  }
  return total;
}

const allowed = await servePage();
const other = await servePage();
const ledgerDir = mkdtempSync(join(tmpdir(), 'client-flow-ledger-'));
const sandbox = await startSandbox(allowed.origin, ledgerDir);
const gatewayUrl = sandbox.url;
const browser = await launchChromium(chromium);

let failed = false;
try {
  // A fresh profile: an empty HTTP cache that the flow fills as it goes.
  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  await page.goto(`${allowed.origin}/?gateway=${encodeURIComponent(gatewayUrl)}`);
  await page.locator('#state', { hasText: 'ready' }).waitFor({ timeout: 15_000 });

  let calls = 0;
  const call = (method, args = [], keepAs) => {
    calls += 1;
    return page.evaluate(([m, a, k]) => window.app.call(m, a, k), [method, args, keepAs]);
  };
  const answeredBefore = await gatewayAnswers();
  const useToken = (t) => page.evaluate((value) => window.app.setToken(value), t);
  const step = (name) => console.log(`- ${name}`);

  const alice = mint('--sub', 'alice');
  await useToken(alice);

  step('platform accounts');
  const accounts = await call('listPlatformAccounts');
  assert.equal(accounts.status, 200, JSON.stringify(accounts));
  assert.deepEqual(accounts.data.items.map((a) => a.id), [501, 502, 503]);

  step('create a campaign and an audience: the 201 carries the ETag');
  const campaign = await call('createCampaign', [{ name: 'Browser campaign' }]);
  assert.equal(campaign.status, 201, JSON.stringify(campaign));
  const created = await call(
    'createAudience',
    [{ name: 'Browser list', description: 'First', campaignId: campaign.data.id }],
    'created',
  );
  assert.equal(created.status, 201, JSON.stringify(created));
  assert.match(created.etag, /^"[0-9a-f]{32}"$/);
  const id = created.data.id;

  step('read twice: the second read is revalidated and answered by the gateway cache');
  const first = await call('getAudience', [id]);
  assert.match(first.cacheStatus, /^audience-gateway; fwd=uri-miss; stored/);
  assert.equal(first.etag, created.etag);
  const second = await call('getAudience', [id]);
  assert.match(second.cacheStatus, /^audience-gateway; hit; ttl=\d+$/, JSON.stringify(second));
  assert.equal(second.etag, first.etag);

  step('update on the create\'s ETag, then read after write');
  const updated = await call('updateAudience', [{ kept: 'created' }, { description: 'Second' }], 'updated');
  assert.equal(updated.status, 200, JSON.stringify(updated));
  assert.notEqual(updated.etag, created.etag);
  const afterWrite = await call('getAudience', [id], 'read');
  assert.equal(afterWrite.data.description, 'Second');
  assert.equal(afterWrite.etag, updated.etag);

  step('another caller changes it: 412, then read again and update again');
  const outsider = await fetch(`${gatewayUrl}/v1/audiences/${id}`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${mint('--sub', 'bob')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ description: 'Changed by another caller' }),
  });
  assert.equal(outsider.status, 200);
  const conflict = await call('updateAudience', [{ kept: 'read' }, { description: 'Mine' }]);
  assert.deepEqual([conflict.status, conflict.code], [412, 'precondition_failed']);
  const reread = await call('getAudience', [id], 'read');
  assert.equal(reread.data.description, 'Changed by another caller');
  const mine = await call('updateAudience', [{ kept: 'read' }, { description: 'Mine' }], 'updated');
  assert.equal(mine.status, 200, JSON.stringify(mine));
  assert.equal((await call('getAudience', [id])).data.description, 'Mine');

  step('activate: the answer says the audience changed; a forced refresh and a revalidation');
  const activation = {
    accountId: 501,
    name: 'Browser list - Meta',
    description: 'Q1',
    startDate: '2026-01-01T00:00:00Z',
    endDate: '2026-03-31T23:59:59Z',
  };
  const activated = await call('activateAudience', [id, activation]);
  assert.equal(activated.status, 201, JSON.stringify(activated));
  assert.equal(activated.audienceChanged, true);
  const stale = await call('deleteAudience', [{ kept: 'updated' }]);
  assert.deepEqual([stale.status, stale.code], [412, 'precondition_failed']);
  const refreshed = await call('getAudience', [id, { refresh: true }]);
  assert.match(refreshed.cacheStatus, /^audience-gateway; fwd=request; stored/);
  const revalidated = await call('getAudience', [id, { revalidate: true }], 'current');
  assert.match(revalidated.cacheStatus, /^audience-gateway; hit;/);
  assert.equal(revalidated.data.activationStatus, 'Active');

  step('delete, then the read is a 404');
  const deleted = await call('deleteAudience', [{ kept: 'current' }]);
  assert.equal(deleted.status, 204, JSON.stringify(deleted));
  const gone = await call('getAudience', [id]);
  assert.deepEqual([gone.status, gone.code], [404, 'not_found']);

  step('reads the browser holds a copy of, for the next tokens');
  assert.equal((await call('getAudience', [1001])).status, 200);
  assert.equal((await call('listPlatformAccounts')).status, 200);

  step('token switch: the second token\'s scopes are checked');
  await useToken(mint('--sub', 'writer', '--scope', 'audiences:write'));
  for (const [method, args] of [['listPlatformAccounts', []], ['getAudience', [1001]]]) {
    const refused = await call(method, args);
    assert.deepEqual([refused.status, refused.code], [403, 'insufficient_scope'], method);
  }
  await useToken(mint('--sub', 'reader', '--scope', 'audiences:read'));
  assert.equal((await call('getAudience', [1001])).status, 200);

  step('expired token: 401, never the cached 200');
  const expiring = mint('--sub', 'alice', '--ttl-secs', '1');
  const { exp } = JSON.parse(Buffer.from(expiring.split('.')[1], 'base64url').toString());
  while (Date.now() / 1000 <= exp + 1) await new Promise((done) => setTimeout(done, 200));
  await useToken(expiring);
  for (const [method, args] of [['listPlatformAccounts', []], ['getAudience', [1001]]]) {
    const expired = await call(method, args);
    assert.deepEqual([expired.status, expired.code], [401, 'invalid_token'], method);
  }

  step('every call reached the gateway; no console errors but the expected answers');
  // The page's calls and the other caller's PATCH: none was answered by the browser alone.
  const answered = (await gatewayAnswers()) - answeredBefore;
  assert.equal(answered, calls + 1, `${calls} calls from the page, ${answered} answered`);
  const expected = /^Failed to load resource: the server responded with a status of (401|403|404|412) /;
  const unexpected = consoleErrors.filter((m) => !expected.test(m));
  assert.deepEqual(unexpected, [], 'console errors');

  step('a page on an origin that is not allowed is refused');
  const strangerPage = await context.newPage();
  const strangerErrors = [];
  strangerPage.on('console', (m) => m.type() === 'error' && strangerErrors.push(m.text()));
  await strangerPage.goto(`${other.origin}/?gateway=${encodeURIComponent(gatewayUrl)}`);
  await strangerPage.locator('#state', { hasText: 'ready' }).waitFor({ timeout: 15_000 });
  await strangerPage.evaluate((t) => window.app.setToken(t), alice);
  for (const method of ['listPlatformAccounts', 'getAudience']) {
    const refused = await strangerPage.evaluate(
      ([m]) => window.app.call(m, m === 'getAudience' ? [1001] : []),
      [method],
    );
    assert.equal(refused.ok, false, method);
    assert.match(refused.error ?? '', /Failed to fetch/, method);
  }
  assert.ok(strangerErrors.some((m) => m.includes('blocked by CORS policy')), strangerErrors.join('\n'));
  console.log(`client flow in Chromium: ${calls} calls from the page, all answered by the gateway`);
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
  sandbox.child.kill('SIGTERM');
  allowed.server.close();
  other.server.close();
  rmSync(ledgerDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
