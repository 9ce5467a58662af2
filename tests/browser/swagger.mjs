// Swagger UI end to end, as a person uses it: open /docs/, authorize with the bearer token,
// "Try it out" on GET /v1/audiences/{id} with id 1001, execute, and see the audience; then
// reload and see the authorization persisted (the same call works without a new token).
//
// Run by scripts/verify-openapi.sh:
//   BASE_URL=http://127.0.0.1:PORT TOKEN=... node tests/browser/swagger.mjs
// Optional: NODE_TOOLS (where playwright-core is installed, default .tools/node),
// SCREENSHOT (default target/openapi-verify/swagger.png), CHROMIUM (default /usr/bin/chromium).
// Debian's Chromium is used; no tool downloads a browser of its own.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { launchChromium } from './chromium.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const tools = process.env.NODE_TOOLS ?? join(root, '.tools', 'node');
const { chromium } = createRequire(join(tools, 'package.json'))('playwright-core');

const base = process.env.BASE_URL;
const token = process.env.TOKEN;
if (!base || !token) {
  console.error('BASE_URL and TOKEN must be set');
  process.exit(2);
}
const screenshot = process.env.SCREENSHOT ?? join(root, 'target', 'openapi-verify', 'swagger.png');
mkdirSync(dirname(screenshot), { recursive: true });

const TIMEOUT = 15_000;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Expands GET /v1/audiences/{id}, enters id 1001, executes, and returns status and body. */
async function getAudience(page) {
  const op = page.locator('#operations-audiences-getAudience');
  await op.waitFor({ timeout: TIMEOUT });
  if (!(await op.locator('.opblock-body').isVisible())) {
    await op.locator('.opblock-summary').first().click();
  }
  const tryOut = op.locator('button', { hasText: 'Try it out' });
  if (await tryOut.isVisible()) await tryOut.click();
  const id = op.locator('tr[data-param-name="id"] input');
  await id.fill('1001');
  // A cached copy would do, but a forced refresh shows the call really reaches the upstream.
  await op.locator('tr[data-param-name="Cache-Control"] input').fill('upstream-refresh');
  await op.locator('button', { hasText: 'Execute' }).click();
  const live = op.locator('.live-responses-table');
  const status = live.locator('.response .response-col_status').first();
  await status.waitFor({ timeout: TIMEOUT });
  const body = live.locator('.response-col_description .microlight').first();
  await body.waitFor({ timeout: TIMEOUT });
  return { status: (await status.innerText()).trim(), body: await body.innerText() };
}

async function authorize(page) {
  await page.locator('.scheme-container button.authorize').click();
  const modal = page.locator('.modal-ux');
  await modal.waitFor({ timeout: TIMEOUT });
  await modal.locator('.auth-container input').first().fill(token);
  await modal.locator('.auth-btn-wrapper button.authorize').click();
  await modal.locator('button', { hasText: 'Logout' }).waitFor({ timeout: TIMEOUT });
  await modal.locator('button', { hasText: 'Close' }).click();
}

/** Whether the Authorize dialog shows the bearer scheme as authorized (a Logout button). */
async function isAuthorized(page) {
  await page.locator('.scheme-container button.authorize').click();
  const modal = page.locator('.modal-ux');
  await modal.waitFor({ timeout: TIMEOUT });
  const authorized = await modal.locator('button', { hasText: 'Logout' }).isVisible();
  await modal.locator('button', { hasText: 'Close' }).click();
  return authorized;
}

const browser = await launchChromium(chromium);
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1600 } });
  page = await context.newPage();
  // The docs are served by the gateway itself (vendored Swagger UI): nothing else may load.
  const foreign = [];
  page.on('request', (req) => {
    if (!req.url().startsWith(base) && !req.url().startsWith('data:')) foreign.push(req.url());
  });

  await page.goto(`${base}/docs/`, { timeout: TIMEOUT });
  await page.locator('.swagger-ui .info .title').waitFor({ timeout: TIMEOUT });
  console.log('ok - /docs/ shows the document without a token');

  await authorize(page);
  console.log('ok - authorized with the bearer token');

  const first = await getAudience(page);
  check(first.status === '200', `expected 200 from GET /v1/audiences/1001, got ${first.status}`);
  check(first.body.includes('"id": 1001'), `the body lacks "id": 1001:\n${first.body}`);
  check(
    first.body.includes('Newsletter subscribers'),
    `the body lacks the audience name:\n${first.body}`,
  );
  console.log('ok - "Try it out" on GET /v1/audiences/1001 answered 200 with the audience');
  await page.screenshot({ path: screenshot, fullPage: true });

  await page.reload();
  await page.locator('.swagger-ui .info .title').waitFor({ timeout: TIMEOUT });
  check(await isAuthorized(page), 'after a reload the bearer token is no longer authorized');
  const again = await getAudience(page);
  check(again.status === '200', `after a reload GET /v1/audiences/1001 answered ${again.status}`);
  console.log('ok - the authorization persisted across a reload');

  check(foreign.length === 0, `requests left the gateway: ${foreign.join(', ')}`);
  console.log('ok - no request left the gateway');
  console.log(`screenshot: ${screenshot}`);
} catch (e) {
  if (page) await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
  console.error(`not ok - ${e.message}\nscreenshot: ${screenshot}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
