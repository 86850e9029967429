// The web console end to end, in Debian's headless Chromium driven by playwright-core.
//
//   node tests/console/e2e.mjs <admin_url> <operator_token> <public_url> <tenant>
//
// Run by the Rust test `operator_console_in_a_headless_browser` (services/ampd/tests/it/
// messaging/operator_console.rs), which talks to this script over stdin/stdout: every line
// this script prints that starts with "E2E " is a JSON event, and at each event it waits for
// one line on stdin (the Rust side's go-ahead, JSON) before going on:
//
//   1. sign in (a wrong token first), create <tenant> through the form, issue an owner key;
//      -> E2E {"event":"owner_key","key":"uk_…"}
//      <- {"agent":"<address>","other":{"tenant":"acme","agent":"<address in acme>"}}
//   2. see the agent the Rust side registered, suspend the tenant with a reason by clicking;
//      -> E2E {"event":"suspended"}                     <- {"checked":true}
//   3. resume it by clicking; the tenants list and the audit log show what happened; the
//      usage chart drawn from a fixture of the usage API's contract, a plan and its limits added
//      to the tenant's JSON shown (as text: markup in them is not run);
//      -> E2E {"event":"resumed","screenshots":"<dir>"}
//
// Screenshots of the main pages go to $AMP_CONSOLE_SCREENSHOTS (a directory; default: a
// temporary one, printed). Any page error, Content-Security-Policy violation or failed step
// exits non-zero.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const [adminUrl, token, publicUrl, tenant] = process.argv.slice(2);
if (!adminUrl || !token || !publicUrl || !tenant) {
  console.error('usage: node e2e.mjs <admin_url> <operator_token> <public_url> <tenant>');
  process.exit(64);
}
const STEP_MS = 15000;
// Never hang a test run: the whole script has two minutes.
setTimeout(() => {
  console.error('e2e: timed out after 120 s');
  process.exit(3);
}, 120000);

const shots = process.env.AMP_CONSOLE_SCREENSHOTS || mkdtempSync(join(tmpdir(), 'amp-console-shots-'));
mkdirSync(shots, { recursive: true });
// A fresh Chromium profile: in $AMP_CHROMIUM_PROFILE (an empty directory the caller removes),
// else a temporary one removed at the end.
const ownProfile = !process.env.AMP_CHROMIUM_PROFILE;
const profile = process.env.AMP_CHROMIUM_PROFILE || mkdtempSync(join(tmpdir(), 'amp-console-chromium-'));

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function event(name, data = {}) {
  console.log('E2E ' + JSON.stringify({ event: name, ...data }));
  const { value, done } = await lines.next();
  if (done) throw new Error(`stdin closed while waiting after ${name}`);
  return JSON.parse(value);
}

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}

const problems = [];
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.AMP_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // The machine has no network: without these Chromium waits on connections it never gets.
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 1280, height: 900 },
});

let status = 0;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) {
      problems.push('CSP: ' + m.text());
    }
  });
  const noTokenInUrl = () => check(!page.url().includes(token), 'the token is never in the URL: ' + page.url());

  // The console is on the admin listener only, never on the public one.
  const pub = await fetch(publicUrl + '/console/');
  check(pub.status === 404, 'no console on the public listener: ' + pub.status);

  // The page and its headers.
  const resp = await page.goto(adminUrl + '/console/');
  check(resp && resp.status() === 200, 'console answers 200');
  const csp = resp.headers()['content-security-policy'] || '';
  check(csp.includes("default-src 'self'") && csp.includes("frame-ancestors 'none'"), 'CSP header: ' + csp);

  // A wrong token is refused and not kept.
  await page.locator('#token').fill('amp_op_not-a-real-token');
  await page.locator('#login-form button[type=submit]').click();
  await page.locator('#login-error').waitFor({ state: 'visible' });
  check((await page.locator('#login-error').textContent()).includes('unauthorized'), 'wrong token: unauthorized');
  check((await page.evaluate(() => sessionStorage.length)) === 0, 'a refused token is not kept');

  // Sign in.
  await page.locator('#token').fill(token);
  await page.locator('#login-form button[type=submit]').click();
  await page.locator('#tenants-table').waitFor();
  noTokenInUrl();
  check((await page.evaluate(() => localStorage.length)) === 0, 'nothing in localStorage');

  // Create the tenant through the form.
  await page.getByRole('link', { name: 'Create tenant' }).click();
  await page.locator('#new-name').fill(tenant);
  await page.locator('#new-registration').selectOption('owner_key');
  await page.getByRole('button', { name: 'Create tenant' }).click();
  await page.locator('#t-name', { hasText: tenant }).waitFor();
  await page.locator('#t-status', { hasText: 'active' }).waitFor();
  // Usage: a chart, or the note that this server has none yet.
  await page.locator('#usage-note').filter({ hasText: /\S/ }).waitFor();

  // Issue an owner key: shown once.
  await page.getByRole('button', { name: 'Issue owner key' }).click();
  await page.locator('#new-key-value', { hasText: 'uk_' }).waitFor();
  const key = (await page.locator('#new-key-value').textContent()).trim();
  await page.locator('#keys-table tbody tr').first().waitFor();
  const go1 = await event('owner_key', { key });

  // The agent the Rust side registered with that key is listed.
  await page.reload();
  await page.locator('#agents-table tbody tr', { hasText: go1.agent }).waitFor();
  check(!(await page.locator('#new-key').isVisible()), 'the owner key is not shown again');
  noTokenInUrl();
  await page.screenshot({ path: join(shots, 'tenant.png'), fullPage: true });

  // Suspend, with a reason, by clicking.
  await page.getByRole('button', { name: 'Suspend…' }).click();
  await page.locator('#suspend-reason').fill('e2e: abuse report');
  await page.getByRole('button', { name: 'Suspend tenant' }).click();
  await page.locator('#t-status', { hasText: 'suspended' }).waitFor();
  await page.locator('#t-facts', { hasText: 'e2e: abuse report' }).waitFor();
  await event('suspended');

  // Resume by clicking.
  await page.getByRole('button', { name: 'Resume' }).click();
  await page.locator('#t-status', { hasText: 'active' }).waitFor();

  // The tenants list shows it active.
  await page.getByRole('link', { name: 'Tenants', exact: true }).click();
  const listed = page.locator('#tenants-table tbody tr', { hasText: tenant });
  await listed.waitFor();
  check((await listed.locator('.badge').textContent()) === 'active', 'listed as active');
  await page.screenshot({ path: join(shots, 'tenants.png'), fullPage: true });

  // The audit log has every action, the suspension's reason too.
  await page.getByRole('link', { name: 'Audit log' }).click();
  const audit = page.locator('#audit-table tbody');
  // The log is oldest first: walk to the last page.
  await audit.locator('tr').first().waitFor();
  while (await page.locator('.pager .next').isEnabled()) {
    await page.locator('.pager .next').click();
    await audit.locator('tr').first().waitFor();
  }
  const ours = audit.locator('tr').filter({ hasText: tenant });
  await ours.filter({ hasText: 'tenant.resume' }).waitFor();
  for (const action of ['tenant.create', 'owner_key.issue', 'tenant.suspend']) {
    check((await ours.filter({ hasText: action }).count()) === 1, 'audit shows ' + action);
  }
  check(
    (await ours.filter({ hasText: 'tenant.suspend' }).textContent()).includes('e2e: abuse report'),
    'audit shows the reason',
  );
  await page.screenshot({ path: join(shots, 'audit.png'), fullPage: true });
  noTokenInUrl();

  // The usage chart against the usage API's contract (a fixture answered in the browser:
  // whether or not this server meters usage, the drawing is what is checked here).
  const hour = 3600e3;
  const now = Math.floor(Date.now() / hour) * hour;
  const rows = Array.from({ length: 48 }, (_, i) => ({
    start: new Date(now - (47 - i) * hour).toISOString().replace(/\.\d+Z$/, 'Z'),
    messages_in: Math.round(400 + 300 * Math.sin(i / 4) + (i % 5) * 40),
    messages_out: Math.round(380 + 280 * Math.sin(i / 4 + 0.3)),
    federated_in: i % 7,
    federated_out: i % 3,
    bytes_stored: 1_000_000 + i * 25_000,
    agents: 12 + Math.floor(i / 12),
    connections: 5 + (i % 4),
    bytes_held: 500_000 + i * 10_000,
  }));
  await page.route(/\/admin\/v1\/tenants\/[^/]+\/usage\?/, (r) => {
    const q = new URL(r.request().url()).searchParams;
    check(q.get('period') === 'hour' && q.get('from') && q.get('to'), 'usage query: ' + q);
    check(r.request().headers()['authorization'] === 'Bearer ' + token, 'the token in the header');
    return r.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ tenant, period: 'hour', rows }) });
  });
  // Plans, as the admin API shows them (`plan`: the tenant's own limits, `limits`: those in
  // force), added to the real answers in the browser; markup in a value stays text.
  const markup = '<b>annual</b>, <i>invoiced</i>';
  const plan = { agents: 50, messages_per_day: 100000, federation: false, billing: markup };
  const limits = { agents: 50, messages_per_minute: 600, messages_per_day: 100000, message_bytes: 262144, federation: false };
  const tenantUrls = /\/admin\/v1\/tenants(\?|\/[^/?]+$)/;
  await page.route(tenantUrls, async (r) => {
    if (r.request().method() !== 'GET') return r.continue();
    const resp = await r.fetch();
    const body = await resp.json();
    const add = (t) => (t.name === tenant ? { ...t, plan, limits } : { ...t, plan: {}, limits });
    const json = body.tenants ? { ...body, tenants: body.tenants.map(add) } : add(body);
    return r.fulfill({ response: resp, json });
  });
  await page.getByRole('link', { name: 'Tenants', exact: true }).click();
  const planCell = (name) => page.locator('#tenants-table tbody tr', { hasText: name }).locator('td').nth(2);
  await planCell(tenant).filter({ hasText: 'custom' }).waitFor();
  const cell = await planCell(tenant).textContent();
  check(cell === 'custom: agents 50, messages per day 100,000, federation refused, …', 'plan cell: ' + cell);
  check((await planCell(go1.other.tenant).textContent()) === 'default', 'a tenant without limits of its own');
  await page.locator('#tenants-table tbody a', { hasText: tenant }).click();
  await page.locator('#plan-card').waitFor();
  const planText = await page.locator('#t-plan').textContent();
  for (const part of [
    "agents50 (tenant's own)",
    'messages_per_minute600 (default plan)',
    "messages_per_day100,000 (tenant's own)",
    'stored_bytesno limit (default plan)',
    'message_bytes262,144 (default plan)',
    "federationrefused (tenant's own)",
    "billing" + markup + " (tenant's own)",
  ]) {
    check(planText.includes(part), 'plan card shows ' + part + ': ' + planText);
  }
  check((await page.locator('#main b, #main i').count()) === 0, 'markup in data stays text');
  await page.locator('#usage-chart svg').waitFor();
  check((await page.locator('#usage-chart rect.bar').count()) === 48, '48 hourly bars');
  const total = rows.reduce((s, r) => s + r.messages_in, 0);
  await page.locator('#usage-note', { hasText: 'total ' + (total / 1e3).toFixed(1) + 'k' }).waitFor();
  await page.locator('#usage-metric').selectOption('agents');
  await page.locator('#usage-note', { hasText: 'latest 15' }).waitFor();
  await page.locator('#usage-metric').selectOption('messages_in');
  await page.locator('#usage-note', { hasText: 'total' }).waitFor();
  await page.screenshot({ path: join(shots, 'usage.png'), fullPage: true });
  await page.unroute(/\/admin\/v1\/tenants\/[^/]+\/usage\?/);
  await page.unroute(tenantUrls);
  noTokenInUrl();

  // A slow answer for a page the operator already left never fills the next page: the
  // tenant's record and agents held back, the operator moves on to another tenant meanwhile.
  const slow = new RegExp('/admin/v1/tenants/' + tenant + '(/agents\\?.*)?$');
  await page.route(slow, async (r) => {
    await new Promise((done) => setTimeout(done, 800));
    return r.continue();
  });
  await page.getByRole('link', { name: 'Tenants', exact: true }).click();
  await page.locator('#tenants-table tbody a', { hasText: tenant }).click();
  await page.waitForTimeout(200);
  await page.evaluate((t) => { location.hash = '#/tenants/' + t; }, go1.other.tenant);
  const otherRows = page.locator('#agents-table tbody tr');
  await otherRows.filter({ hasText: go1.other.agent }).waitFor();
  await page.waitForTimeout(1500);
  check((await page.locator('#t-name').textContent()) === go1.other.tenant, 'still the other tenant');
  check(!(await page.locator('#agents-table tbody').textContent()).includes(go1.agent), 'no agent of the page left behind');
  check(
    (await page.locator('#agents-total').textContent()) === '(' + (await otherRows.count()) + ')',
    'the agents count is the other tenant\'s: ' + (await page.locator('#agents-total').textContent()),
  );
  await page.unroute(slow);

  // Sign out forgets the token.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#login-form').waitFor();
  check((await page.evaluate(() => sessionStorage.length)) === 0, 'signed out: no token kept');

  check(problems.length === 0, 'no page errors: ' + problems.join('; '));
  console.error('e2e: screenshots in ' + shots);
  console.log('E2E ' + JSON.stringify({ event: 'resumed', screenshots: shots }));
} catch (e) {
  console.error('e2e failed: ' + (e && e.stack ? e.stack : e));
  if (problems.length) console.error('page problems: ' + problems.join('; '));
  status = 1;
} finally {
  await context.close().catch(() => {});
  if (ownProfile) rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
