// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core,
// against the real `plinth` binary on a free 127.0.0.1 port. `cargo xtask test` installs what
// this needs and runs it with PLINTH_BIN (the binary), PLINTH_GUEST_DIR (built components)
// and PLINTH_SCREENSHOT_DIR (where each main screen is saved, light and dark).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const PLINTH = process.env.PLINTH_BIN;
const GUESTS = process.env.PLINTH_GUEST_DIR;
const SHOTS = process.env.PLINTH_SCREENSHOT_DIR ?? join(tmpdir(), 'plinth-screenshots');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ROOT = new URL('../../', import.meta.url).pathname;
const TOKEN = 'browser-admin-token-0123456789abcdef';
const EMAIL = 'root@example.com';
const PASSWORD = 'correct horse battery staple';

let server;
let base;
let dataDir;
let browser;

/** Starts `plinth serve` and resolves with its base URL once it listens. */
function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), 'plinth-browser-'));
  server = spawn(PLINTH, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
    env: {
      ...process.env,
      PLINTH_ADMIN_TOKEN: TOKEN,
      PLINTH_ADMIN_EMAIL: EMAIL,
      PLINTH_ADMIN_PASSWORD: PASSWORD,
      RUST_LOG: 'warn,plinth_host::server=info',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('plinth did not start within 60 s')), 60_000);
    let seen = '';
    server.stderr.on('data', (chunk) => {
      seen += chunk;
      const found = /listening on (http:\/\/\S+)/.exec(seen);
      if (found && !base) {
        clearTimeout(timer);
        resolve(found[1]);
      }
    });
    server.on('exit', (code) => reject(new Error(`plinth exited with ${code}: ${seen}`)));
  });
}

/** Deploys a built component with a manifest through the admin API (as the CLI does). */
async function deploy(name, manifest, wasm) {
  const form = new FormData();
  form.append('manifest', manifest);
  form.append('component', new Blob([readFileSync(join(GUESTS, wasm))]), `${name}.wasm`);
  const reply = await fetch(`${base}/admin/plugins/${name}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${TOKEN}` },
    body: form,
  });
  assert.ok(reply.ok, `deploying ${name}: ${reply.status} ${await reply.text()}`);
}

async function signIn(page, email = EMAIL, password = PASSWORD) {
  await page.goto(`${base}/_/`);
  assert.match(page.url(), /\/_\/sign-in$/);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
}

/** Saves the page in light and dark (following the system setting, as the stylesheet does). */
async function screenshots(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.screenshot({ path: join(SHOTS, `${name}-${scheme}.png`), fullPage: true });
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

before(async () => {
  assert.ok(PLINTH && GUESTS, 'PLINTH_BIN and PLINTH_GUEST_DIR must be set (cargo xtask test does)');
  base = await startServer();
  const hello = readFileSync(join(ROOT, 'examples/hello/plinth.toml'), 'utf8');
  await deploy('hello', hello, 'hello.wasm');
  const configReader = readFileSync(join(ROOT, 'tests/programs/config-reader/plinth.toml'), 'utf8');
  await deploy('config-reader', configReader, 'config_reader.wasm');
  await deploy('config-reader', `${configReader}\n[limits]\ntimeout = "3s"\n`, 'config_reader.wasm');
  const hostile = readFileSync(join(ROOT, 'tests/programs/hostile/plinth.toml'), 'utf8');
  await deploy('hostile', hostile, 'hostile.wasm');
  // As root (CI), Chromium runs only without its sandbox.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
  server?.kill();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test('an operator signs in and sees the server and its plugins', async () => {
  // Traffic for the charts: they show the minute so far.
  for (let i = 0; i < 20; i++) assert.equal((await fetch(`${base}/hello/chart-${i}`)).status, 200);
  const page = await browser.newPage();
  await signIn(page);
  await page.waitForURL(`${base}/_/`);
  await assert.doesNotReject(page.getByRole('heading', { name: 'Overview' }).waitFor());
  assert.match(await page.locator('main').innerText(), /plugin\.deploy/);
  assert.ok(
    // The 20 requests fall in at most two minutes (one closes 60 s after start).
    await page
      .getByRole('img', { name: /^Requests per minute over the last hour: now \d+, peak (1\d|20)$/ })
      .isVisible(),
    'the requests chart',
  );
  await screenshots(page, 'overview');
  await page.getByRole('link', { name: 'Audit log' }).click();
  await page.getByRole('heading', { name: 'Audit log' }).waitFor();
  await screenshots(page, 'audit');
  await page.getByRole('link', { name: 'Plugins' }).click();
  await page.getByRole('link', { name: 'hello' }).click();
  await page.getByRole('heading', { name: 'hello' }).waitFor();
  assert.match(await page.locator('main').innerText(), /\/hello\/\{name\}/);
  await screenshots(page, 'plugin');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/\/_\/sign-in$/);
  await screenshots(page, 'sign-in');
  await page.goto(`${base}/_/plugins`);
  assert.match(page.url(), /\/_\/sign-in$/, 'signed out, the dashboard is closed');
  await page.close();
});

test('a secret set in the page is masked after a reload and markup in a value runs nothing', async () => {
  const page = await browser.newPage();
  await signIn(page);
  await page.goto(`${base}/_/plugins/config-reader`);
  const setValue = async (key, value, secret) => {
    await page.getByLabel('Key', { exact: true }).fill(key);
    await page.getByLabel('Value', { exact: true }).fill(value);
    await page.getByLabel(/Secret/).setChecked(secret);
    await page.getByRole('button', { name: 'Set', exact: true }).click();
    await page.waitForLoadState();
  };
  await setValue('api_token', 'sk_browser_secret_42', true);
  await setValue('greeting', '<img src=x onerror="window.__pwned=1">', false);
  await page.reload();
  const text = await page.locator('main').innerText();
  assert.ok(!text.includes('sk_browser_secret_42'), 'the secret came back');
  assert.ok(text.includes('<img src=x onerror="window.__pwned=1">'), 'the value is shown as text');
  assert.equal(await page.evaluate(() => window.__pwned), undefined, 'markup from a value ran');
  assert.equal(await (await fetch(`${base}/config-reader/api_token`)).text(), 'sk_browser_secret_42');
  await page.close();
});

test('rolling back in the page makes the earlier version serve', async () => {
  const page = await browser.newPage();
  await signIn(page);
  await page.goto(`${base}/_/plugins/config-reader`);
  await page.getByRole('button', { name: 'Roll back to 1' }).click();
  await page.waitForLoadState();
  const versions = await (
    await fetch(`${base}/admin/plugins/config-reader/versions`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    })
  ).json();
  assert.equal(versions.versions.find((v) => v.active).version, 1);
  assert.ok(await page.getByRole('button', { name: 'Roll back to 2' }).isVisible());
  await page.close();
});

test('a form posted from another site changes nothing', async () => {
  const page = await browser.newPage();
  await signIn(page);
  await page.waitForURL(`${base}/_/`);
  // A hostile page on another origin (localhost is another site than 127.0.0.1) posts the
  // sign-out form to the dashboard as soon as it loads.
  const port = new URL(base).port;
  const hostile = createServer((_, response) => {
    response.setHeader('content-type', 'text/html');
    response.end(
      `<form id=f method=post action="http://127.0.0.1:${port}/_/sign-out">` +
        `<input name=_csrf value=guess></form><script>document.getElementById('f').submit()</script>`,
    );
  });
  await new Promise((resolve) => hostile.listen(0, '127.0.0.1', resolve));
  const attack = await browser.newPage();
  const answered = attack.waitForResponse((r) => r.url().endsWith('/_/sign-out'));
  await attack.goto(`http://localhost:${hostile.address().port}/`);
  assert.equal((await answered).status(), 403);
  await attack.close();
  hostile.close();
  await page.goto(`${base}/_/`);
  assert.equal(page.url(), `${base}/_/`, 'the session survived the hostile post');
  await page.close();
});

test('a plain account and a signed-out browser are refused', async () => {
  const registered = await fetch(`${base}/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'pat@example.com', password: 'password-1234' }),
  });
  assert.equal(registered.status, 201);
  const page = await browser.newPage();
  await signIn(page, 'pat@example.com', 'password-1234');
  await page.waitForLoadState();
  assert.match(await page.locator('body').innerText(), /operators and admins/);
  await page.goto(`${base}/_/plugins/hello`);
  assert.match(page.url(), /\/_\/sign-in$/);
  await page.close();
});

test('a request appears in the live log, and its id shows every line of it', async () => {
  const page = await browser.newPage();
  await signIn(page);
  await page.waitForURL(`${base}/_/`);
  await page.goto(`${base}/_/plugins/hello`);
  await page.getByRole('link', { name: 'Log, live' }).click();
  await page.waitForURL(/\/_\/plugins\/hello\/logs$/);
  // The live tail is open once the browser has the stream's first answer.
  const opened = page.waitForResponse((r) => r.url().includes('/logs/stream'));
  await page.reload();
  await opened;
  const called = await fetch(`${base}/hello/watched-live`);
  assert.equal(called.status, 200);
  const row = page.locator('tr', { hasText: '/hello/watched-live' });
  await row.waitFor({ timeout: 10_000 });
  await screenshots(page, 'log');
  await row.getByRole('link').click();
  await page.waitForURL(/request=/);
  assert.match(await page.locator('main').innerText(), /Every line of request/);
  assert.equal(await page.locator('tbody tr', { hasText: '/hello/watched-live' }).count(), 1);
  await page.close();
});

test('a plugin logging markup runs nothing in the page, listed or live', async () => {
  const page = await browser.newPage();
  await signIn(page);
  await page.waitForURL(`${base}/_/`);
  assert.equal((await fetch(`${base}/hostile/markup`)).status, 200);
  await page.goto(`${base}/_/plugins/hostile/logs`);
  await page.locator('td.message', { hasText: '<script>window.__pwned=1</script>' }).first().waitFor();
  // And a line arriving through the live tail.
  assert.equal((await fetch(`${base}/hostile/markup`)).status, 200);
  await page.waitForFunction(
    () => document.querySelectorAll('td.message').length >= 4,
    null,
    { timeout: 10_000 },
  );
  assert.equal(await page.evaluate(() => window.__pwned), undefined, 'markup from a log line ran');
  assert.equal(await page.locator('img').count(), 0, 'a logged tag became an element');
  await page.close();
});

test('a plugin deployed by upload in the page serves its routes', async () => {
  const page = await browser.newPage();
  await signIn(page);
  await page.waitForURL(`${base}/_/`);
  await page.getByRole('link', { name: 'Deploy' }).click();
  await page.getByLabel('Component (.wasm)').setInputFiles(join(GUESTS, 'plain_http.wasm'));
  await page
    .getByLabel('Or paste the manifest')
    .fill('name = "uploaded"\n[[routes]]\npath = "/uploaded/{*rest}"\nmethods = ["GET"]\n');
  await screenshots(page, 'deploy');
  await page.getByRole('button', { name: 'Deploy' }).click();
  await page.waitForURL(`${base}/_/plugins/uploaded`);
  assert.match(await page.locator('main').innerText(), /\/uploaded\/\{\*rest\}/);
  assert.equal((await fetch(`${base}/uploaded/from-the-browser`)).status, 200);
  await page.close();
});

test('data a plugin wrote is browsed and edited in the page, and its markup runs nothing', async () => {
  assert.equal((await fetch(`${base}/hostile/markup`)).status, 200);
  const page = await browser.newPage();
  await signIn(page);
  await page.waitForURL(`${base}/_/`);
  await page.goto(`${base}/_/plugins/hostile`);
  await page.getByRole('link', { name: 'Data (key-value)' }).click();
  await page.waitForURL(/\/_\/plugins\/hostile\/kv$/);
  const listed = page.locator('td.preview', { hasText: '<script>window.__pwned=1</script>' });
  await listed.waitFor();
  await screenshots(page, 'kv');
  await page.getByRole('link', { name: 'markup', exact: true }).click();
  await page.waitForURL(/kv\/entry\?/);
  assert.match(await page.locator('pre.value').innerText(), /<img src=x onerror=/);
  await page.getByRole('link', { name: 'hex', exact: true }).click();
  assert.match(await page.locator('pre.value').innerText(), /3c 69 6d 67/);
  await screenshots(page, 'kv-entry');
  assert.equal(await page.evaluate(() => window.__pwned), undefined, 'markup from a value ran');
  assert.equal(await page.locator('main img').count(), 0, 'a stored tag became an element');

  // Edit as text; the plugin's own read of its data sees it.
  await page.getByRole('link', { name: 'text', exact: true }).click();
  await page.getByLabel('text (UTF-8)').check();
  await page.getByLabel('Value', { exact: true }).fill('edited in the browser');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.waitForLoadState();
  assert.equal(await page.locator('pre.value').innerText(), 'edited in the browser');
  const stored = await (
    await fetch(`${base}/admin/plugins/hostile/kv/entry?bucket=hostile&key=markup`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    })
  ).text();
  assert.equal(stored, 'edited in the browser');

  // Delete asks first: without the box ticked the browser does not send the form.
  await page.getByRole('button', { name: 'Delete' }).click();
  const entry = `${base}/admin/plugins/hostile/kv/entry?bucket=hostile&key=markup`;
  const admin = { headers: { authorization: `Bearer ${TOKEN}` } };
  assert.equal((await fetch(entry, admin)).status, 200, 'the delete went through unconfirmed');
  await page.getByLabel('Yes, delete this entry').check();
  await page.getByRole('button', { name: 'Delete' }).click();
  await page.waitForURL(/\/_\/plugins\/hostile\/kv\?/);
  assert.equal(await page.locator('td.preview', { hasText: 'edited in the browser' }).count(), 0);
  assert.equal((await fetch(entry, admin)).status, 404);
  await page.close();
});

test('an admin makes an API key in the page, sees it once, and it works', async () => {
  const page = await browser.newPage();
  await signIn(page);
  await page.waitForURL(`${base}/_/`);
  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByRole('heading', { name: 'Users', exact: true }).waitFor();
  assert.match(await page.locator('main').innerText(), new RegExp(EMAIL.replace('.', '\\.')));
  await screenshots(page, 'users');
  await page.getByRole('link', { name: 'Keys' }).click();
  await page.getByRole('heading', { name: 'Keys', exact: true }).waitFor();
  await page.getByLabel('Name').fill('browser ci');
  await page.getByLabel('Role').selectOption('operator');
  await page.getByRole('button', { name: 'Make the key' }).click();
  await page.getByRole('heading', { name: 'Key made' }).waitFor();
  const key = (await page.locator('code.secret').innerText()).trim();
  assert.match(key, /^plinth_/);
  const listed = await fetch(`${base}/admin/plugins`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(listed.status, 200);
  await page.goto(`${base}/_/keys`);
  const text = await page.locator('main').innerText();
  assert.ok(text.includes('browser ci'), 'the key is listed by name');
  assert.ok(!text.includes(key), 'the key was shown again');
  await screenshots(page, 'keys');
  await page.close();
});
