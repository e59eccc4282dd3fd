// Browser test of the Lab page (`GET /`) in real Chromium through playwright-core.
//
//   node web/tests/lab.mjs <bff url> <screenshot dir>
//
// Loads the page with no console errors, sees it say "reconnecting" while the test refuses the
// live stream and "live" once it is let through and the first snapshot arrives, runs every
// "Drive it" panel to a `pass` verdict, starts a saga and waits for the message flow to reach
// `Completed` from the live events (and a last-unit race to one Completed, one Rejected), checks
// the decision records are rendered and Tab shows focus, then resizes to 360 px and checks
// nothing overflows horizontally. Saves desktop, dark and phone screenshots.
// Exits 0 on success, 1 with the reason otherwise. services/bff/tests/api/pages.rs runs it.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** The whole run's bound: a stuck page fails the test instead of hanging it (the outbox and
 * vault-rotation demos add a few seconds each). */
const RUN_BUDGET_MS = 90_000;
/** One demo's bound: the slowest (a saga over RabbitMQ, the breaker's sick upstream) take ~1-2 s. */
const DEMO_TIMEOUT_MS = 20_000;
/** Screenshots are committed as PNG, what every image viewer shows. */
const SHOT = { type: 'png' };
/** The phone width the page must fit. */
const PHONE_WIDTH = 360;

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error('usage: node lab.mjs <bff url> <screenshot dir>');
  process.exit(2);
}
const budget = setTimeout(() => {
  console.error(`FAIL: the run took longer than ${RUN_BUDGET_MS} ms`);
  process.exit(1);
}, RUN_BUDGET_MS);

const errors = [];
const profile = mkdtempSync(join(tmpdir(), 'lab-chromium-'));
mkdirSync(shots, { recursive: true });
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.LAB_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

function step(text) {
  console.log(`- ${text}`);
}

async function verdictOf(page, selector) {
  const verdict = page.locator(`${selector} .result [data-verdict]`);
  await verdict.first().waitFor({ timeout: DEMO_TIMEOUT_MS });
  const value = await verdict.first().getAttribute('data-verdict');
  if (value !== 'pass') {
    const text = await page.locator(`${selector} .result`).innerText();
    throw new Error(`${selector}: verdict ${value}: ${text}`);
  }
}

/** Submits `form` (by its data-form) and waits for a pass in its panel. */
async function drive(page, form, panel, before) {
  const button = page.locator(`form[data-form="${form}"] button[type=submit]`);
  if (before) await before();
  await button.click();
  await page.locator(`${panel}[aria-busy="false"] .result [data-verdict]`).first().waitFor({ timeout: DEMO_TIMEOUT_MS });
  await verdictOf(page, panel);
  step(`${form}: pass — ${(await page.locator(`${panel} .result .verdict-line`).first().innerText()).trim()}`);
}

/** With LAB_SHOT_SECTIONS=<dir>, one screenshot per section too, for a person to look at. */
async function sections(page, width) {
  const dir = process.env.LAB_SHOT_SECTIONS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  for (const id of ['hero', 'cluster', 'svc-bff', 'svc-identity', 'svc-catalog', 'svc-orders', 'svc-payments', 'svc-checkout', 'flow', 'concurrency', 'decisions']) {
    const target = id === 'hero' ? page.locator('section.hero') : page.locator(`#${id}`);
    await target.screenshot({ path: join(dir, `${width}-${id}.png`) });
  }
}

/** Whether the test is refusing the live stream on purpose. */
let refusing = true;
let failed = null;
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    // While the test itself refuses the stream, the browser reports each refused attempt.
    if (refusing && (msg.location()?.url || '').includes('/api/events')) return;
    errors.push(`console: ${msg.text()} (${msg.location()?.url || 'no url'})`);
  });
  page.on('response', (answer) => {
    // A refusal a panel shows on purpose (429) is not an error; anything else 4xx/5xx is.
    if (answer.status() >= 400 && answer.status() !== 429) errors.push(`HTTP ${answer.status()} for ${answer.url()}`);
  });
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
  page.on('requestfailed', (request) => {
    // The live stream is closed when the page goes away; that is not an error of the page.
    if (!request.url().includes('/api/events')) errors.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
  });

  // Connection states, honestly: with the stream refused the page says it is reconnecting;
  // let through, it waits for the first snapshot, then is live.
  await page.route('**/api/events*', (route) => route.abort());
  const response = await page.goto(`${base}/`, { waitUntil: 'load' });
  if (!response || response.status() !== 200) throw new Error(`GET / answered ${response && response.status()}`);
  await page.locator('#conn[data-state="reconnecting"]', { hasText: 'reconnecting' }).waitFor({ timeout: DEMO_TIMEOUT_MS });
  step('with the stream refused, the page says "reconnecting"');
  await page.unroute('**/api/events*');
  refusing = false;
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: DEMO_TIMEOUT_MS });
  step('let through, the live stream delivered its first snapshot');
  const hero = await page.locator('#hero-count').innerText();
  if (!/services$/.test(hero) || hero === 'Services') throw new Error(`the hero did not count what runs: ${hero}`);
  step(`hero: ${hero}`);
  await page.locator('#diagram [data-node="catalog-2"].ok').waitFor({ timeout: DEMO_TIMEOUT_MS });
  step('the diagram shows both catalog replicas ready');

  await drive(page, 'rate-limit', '#drive-rate-limit');
  const refused = await page.locator('#rl-results .chip.bad').count();
  if (refused === 0) throw new Error('the burst refused nothing');
  await page.locator('#rl-countdown', { hasText: 'Retry-After' }).waitFor({ timeout: 5_000 });
  await drive(page, 'race', '#drive-race');
  const wins = await page.locator('#race-results .chip.ok').count();
  const lost = await page.locator('#race-results .chip.warn').count();
  if (wins !== 1 || lost < 1) throw new Error(`race: ${wins} winners, ${lost} 412s`);
  await drive(page, 'cache', '#drive-cache');
  await drive(page, 'last-unit', '#drive-last-unit');
  await drive(page, 'idempotency', '#drive-idempotency');
  await drive(page, 'outbox', '#drive-outbox');
  await drive(page, 'vault-rotation', '#drive-vault');
  await drive(page, 'payment-declined', '#drive-declined');

  await page.locator('#saga-form button[data-scenario="success"]').click();
  await page.locator('#saga li[data-state="Completed"].live').waitFor({ timeout: DEMO_TIMEOUT_MS });
  await page.locator('#flow-result [data-verdict]').waitFor({ timeout: DEMO_TIMEOUT_MS });
  const sagaVerdict = await page.locator('#flow-result [data-verdict]').getAttribute('data-verdict');
  if (sagaVerdict !== 'pass') throw new Error(`saga: verdict ${sagaVerdict}`);
  const seen = await page.locator('#messages li').count();
  step(`saga: Completed from the live events (${seen} messages shown)`);
  await page.locator('#saga-form button[data-scenario="last-unit-race"]').click();
  await page.locator('#saga-fail li[data-state="Rejected"].live').waitFor({ timeout: DEMO_TIMEOUT_MS });
  await page.locator('#saga li[data-state="Completed"].live').waitFor({ timeout: DEMO_TIMEOUT_MS });
  await page.locator('#flow-result [data-verdict]').waitFor({ timeout: DEMO_TIMEOUT_MS });
  if ((await page.locator('#flow-result [data-verdict]').getAttribute('data-verdict')) !== 'pass') {
    throw new Error(`last-unit race: ${await page.locator('#flow-result').innerText()}`);
  }
  step('last-unit race: one order Completed, one Rejected, from the live events');
  // The payment-expired saga: the result is replaced, so wait for the busy buttons to free up.
  await page.locator('#saga-form button[data-scenario="payment-expired"]').click();
  await page.locator('#saga-fail li[data-state="Cancelled"].live').waitFor({ timeout: DEMO_TIMEOUT_MS });
  await page.locator('#saga-form button[data-scenario="payment-expired"]:not([disabled])').waitFor({ timeout: DEMO_TIMEOUT_MS });
  if ((await page.locator('#flow-result [data-verdict]').getAttribute('data-verdict')) !== 'pass') {
    throw new Error(`payment expired: ${await page.locator('#flow-result').innerText()}`);
  }
  step('payment expired: Cancelled from the live events, stock back');

  await drive(page, 'circuit-breaker', '#drive-breaker');
  if ((await page.locator('#drive-breaker .states li.on[data-state="open"]').count()) !== 1) {
    throw new Error('the breaker state machine does not show open');
  }
  // Heal the catalog again: the checkbox off recovers it and closes the breakers.
  await drive(page, 'circuit-breaker', '#drive-breaker', () => page.locator('#drive-breaker input[name=upstream_failing]').uncheck());

  const adrs = await page.locator('#adrs details.adr').count();
  if (adrs < 1) throw new Error('no decision record rendered');
  await page.locator('#adrs details.adr summary').first().click();
  step(`${adrs} decision records rendered, the first expands`);

  // Keyboard: from the top, Tab reaches a control and its focus is drawn.
  await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => {
    const node = document.activeElement;
    return node && { tag: node.tagName, outline: getComputedStyle(node).outlineStyle };
  });
  if (!focused || focused.tag === 'BODY' || focused.outline === 'none') {
    throw new Error(`Tab did not show a focused control: ${JSON.stringify(focused)}`);
  }
  step(`Tab focuses a ${focused.tag.toLowerCase()} with a visible ${focused.outline} outline`);

  await page.screenshot({ path: join(shots, 'lab-desktop.png'), fullPage: true, ...SHOT });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, 'lab-desktop-dark.png'), ...SHOT });
  await page.emulateMedia({ colorScheme: 'light' });

  await sections(page, 'desktop');
  await page.setViewportSize({ width: PHONE_WIDTH, height: 780 });
  await page.waitForTimeout(200);
  const overflow = await page.evaluate((width) => {
    const wide = [];
    for (const node of document.querySelectorAll('body *')) {
      const box = node.getBoundingClientRect();
      if (box.width > 0 && box.right > width + 1) wide.push(`${node.tagName.toLowerCase()}${node.id ? `#${node.id}` : ''}.${node.className} right=${Math.round(box.right)}`);
    }
    return { scroll: document.documentElement.scrollWidth, wide: wide.slice(0, 10) };
  }, PHONE_WIDTH);
  if (overflow.scroll > PHONE_WIDTH) throw new Error(`at ${PHONE_WIDTH} px the page is ${overflow.scroll} px wide: ${overflow.wide.join(', ')}`);
  step(`nothing overflows at ${PHONE_WIDTH} px`);
  await page.screenshot({ path: join(shots, 'lab-phone.png'), fullPage: true, ...SHOT });
  await sections(page, 'phone');

  if (errors.length) throw new Error(`errors on the page:\n${errors.join('\n')}`);
} catch (error) {
  failed = error;
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  clearTimeout(budget);
}
if (failed) {
  console.error(`FAIL: ${failed.stack || failed}`);
  if (errors.length) console.error(errors.join('\n'));
  process.exit(1);
}
console.log('ok: the Lab page passed in Chromium');
