// Drives Debian's Chromium for the web views' browser tests (tests/src/browser.rs): reads one
// JSON command a line on stdin, answers one JSON line on stdout. The scenarios themselves are
// Rust tests against the real server; this file only moves commands to the browser.
//
// Usage: node driver.mjs <user-data-dir> <spki-pin-base64>
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const [userDataDir, pin] = process.argv.slice(2);

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // The pages' content security policy forbids inline scripts; axe-core is injected by tests.
  bypassCSP: true,
  viewport: { width: 1200, height: 900 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // Trust the test server's key by its pin, nothing else.
    `--ignore-certificate-errors-spki-list=${pin}`,
  ],
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(60_000);

async function navigating(action) {
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    action(),
  ]);
  return { status: response ? response.status() : 0, url: page.url() };
}

async function run(c) {
  switch (c.op) {
    case 'goto': {
      const r = await page.goto(c.url, { waitUntil: 'load' });
      return { status: r ? r.status() : 0, url: page.url() };
    }
    case 'fill': await page.fill(c.selector, c.value); return {};
    case 'select': await page.selectOption(c.selector, c.value); return {};
    case 'submit': return navigating(() => page.click(c.selector));
    case 'text': return { text: await page.innerText(c.selector || 'body') };
    case 'count': return { count: await page.locator(c.selector).count() };
    case 'attr': return { value: await page.getAttribute(c.selector, c.name) };
    case 'cookies': return { cookies: await context.cookies() };
    case 'clear_cookies': await context.clearCookies(); return {};
    case 'screenshot': await page.screenshot({ path: c.path, fullPage: true }); return {};
    case 'axe': {
      await page.evaluate(axeSource);
      const result = await page.evaluate(() =>
        // eslint-disable-next-line no-undef
        axe.run(document, { resultTypes: ['violations'] }));
      const bad = result.violations
        .filter((v) => v.impact === 'serious' || v.impact === 'critical')
        .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
          nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
      return { violations: bad, checked: result.violations.length };
    }
    case 'close': await context.close(); return {};
    default: throw new Error(`unknown command ${c.op}`);
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer;
  try {
    const c = JSON.parse(line);
    answer = { ok: true, ...(await run(c)) };
    if (c.op === 'close') { process.stdout.write(JSON.stringify(answer) + '\n'); break; }
  } catch (e) {
    answer = { ok: false, error: String(e && e.message || e) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
process.exit(0);
