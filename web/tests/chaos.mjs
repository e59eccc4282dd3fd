// Browser test of the chaos page (`GET /chaos`) in real Chromium through playwright-core.
//
//   node web/tests/chaos.mjs <bff url> <screenshot dir>
//
// Loads the page with no console errors and waits for it to be live with the topology drawn;
// injects a 503 fault on catalog for a few seconds from the page's own form; sees it listed
// with its time left counting down, the catalog instance marked as faulted in the topology, and
// (with traffic the test drives through `/api/products` from outside the page) the scoreboard's
// 5xx column go red; sees the fault end by itself and the recovery (the badge gone, catalog
// answering, a snapshot without 5xx); sees the invariants panel report every invariant held and
// what a visitor may not do shown disabled with the reason; stops a second, longer fault with its
// Stop button from the keyboard; when the BFF has an apphost, injects a TCP latency fault from the
// form, sees it listed with its time left and stops it, and sees the refused process actions'
// reason; checks Tab shows focus; then resizes to 360 px and checks nothing overflows
// horizontally. Saves desktop (light and dark) and phone screenshots.
// Exits 0 on success, 1 with the reason otherwise. services/bff/tests/api/pages.rs runs it.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** The whole run's bound: a stuck page fails the test instead of hanging it. */
const RUN_BUDGET_MS = 50_000;
/** One wait's bound: snapshots come every 2 s, the invariants every 5 s. */
const WAIT_MS = 15_000;
/** The injected fault's duration: long enough to see it, short enough to watch it end. */
const FAULT_S = 5;
/** The phone width the page must fit. */
const PHONE_WIDTH = 360;

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error('usage: node chaos.mjs <bff url> <screenshot dir>');
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

/** Calls `/api/products` `count` times from outside the page; answers the statuses seen. */
async function traffic(count) {
  const statuses = [];
  for (let i = 0; i < count; i += 1) {
    try {
      const response = await fetch(`${base}/api/products`);
      statuses.push(response.status);
      await response.arrayBuffer();
    } catch {
      statuses.push(0);
    }
  }
  return statuses;
}

/** With LAB_SHOT_SECTIONS=<dir>, one screenshot per section too, for a person to look at. */
async function sections(page, width) {
  const dir = process.env.LAB_SHOT_SECTIONS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  for (const id of ['topology', 'faults', 'scoreboard', 'invariants', 'journeys', 'console']) {
    await page.locator(`#${id}`).screenshot({ path: join(dir, `chaos-${width}-${id}.png`) });
  }
}

let failed = null;
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console: ${msg.text()} (${msg.location()?.url || 'no url'})`);
  });
  page.on('response', (answer) => {
    if (answer.status() >= 400) errors.push(`HTTP ${answer.status()} for ${answer.url()}`);
  });
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
  page.on('requestfailed', (request) => {
    if (!request.url().includes('/api/events')) errors.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
  });

  const response = await page.goto(`${base}/chaos`, { waitUntil: 'load' });
  if (!response || response.status() !== 200) throw new Error(`GET /chaos answered ${response && response.status()}`);
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: WAIT_MS });
  step('the live stream delivered its first snapshot');
  await page.locator('#topo-services li[data-service="catalog"].ok').first().waitFor({ timeout: WAIT_MS });
  const instances = await page.locator('#topo-services li[data-service]').count();
  step(`the topology shows ${instances} instances, catalog ready`);
  await page.locator('#score-table tbody tr').first().waitFor({ timeout: WAIT_MS });
  step('the scoreboard shows a metrics snapshot');
  const disabled = await page.locator('#not-here button:disabled').count();
  if (disabled < 1) throw new Error('the faults not available here are not shown');
  step(`${disabled} faults shown as not available to a visitor, disabled with the reason`);

  await page.locator('#inv-summary[data-status="held"]').waitFor({ timeout: WAIT_MS });
  const held = await page.locator('#inv-list li[data-status="held"]').count();
  const all = await page.locator('#inv-list li').count();
  if (held !== all || all === 0) throw new Error(`invariants: ${held} of ${all} held`);
  step(`invariants: all ${all} held`);

  // Inject from the page's own controls.
  await page.selectOption('#fault-target', 'catalog');
  await page.selectOption('#fault-kind', 'status');
  await page.fill('#fault-form input[name=status]', '503');
  await page.fill('#fault-form input[name=probability]', '100');
  await page.fill('#fault-form input[name=duration_s]', String(FAULT_S));
  await page.locator('#fault-form button[type=submit]').click();
  const item = page.locator('#fault-list .fault-item[data-target="catalog"]');
  await item.waitFor({ timeout: WAIT_MS });
  const left = await item.locator('.left').innerText();
  if (!/s left/.test(left)) throw new Error(`the fault shows no time left: ${left}`);
  await page.waitForTimeout(600);
  const later = await item.locator('.left').innerText();
  if (parseFloat(later) >= parseFloat(left)) throw new Error(`the time left does not count down: ${left} then ${later}`);
  step(`the fault is listed: ${(await item.innerText()).replace(/\s+/g, ' ')}, counting down (${left} → ${later})`);
  await page.locator('#topo-services li[data-service="catalog"].fault').first().waitFor({ timeout: WAIT_MS });
  step('the topology marks catalog as faulted');

  const during = await traffic(10);
  if (!during.includes(503)) throw new Error(`the fault did not fail catalog's calls: ${during}`);
  await page.locator('#score-table td.bad').first().waitFor({ timeout: WAIT_MS });
  step(`the scoreboard shows the failures (products answered ${[...new Set(during)].join(', ')})`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, 'chaos-desktop.png'), fullPage: true, type: 'png' });
  await sections(page, 'desktop');
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: join(shots, 'chaos-desktop-dark.png'), type: 'png' });
  await page.emulateMedia({ colorScheme: 'light' });

  // It ends by itself.
  await page.locator('#fault-list .fault-item').waitFor({ state: 'detached', timeout: WAIT_MS });
  await page.locator('#topo-services li[data-service="catalog"].fault').first().waitFor({ state: 'detached', timeout: WAIT_MS });
  await page.locator('#console-lines li', { hasText: 'fault on catalog expired' }).first().waitFor({ timeout: WAIT_MS });
  step('the fault ended by itself (listed no more, console says expired)');
  const after = await traffic(3);
  if (after.some((s) => s !== 200)) throw new Error(`catalog did not recover: ${after}`);
  // A snapshot that carried traffic and no 5xx: req/s is the 2nd column, 5xx the 4th.
  await page.waitForFunction(() => [...document.querySelectorAll('#score-table tbody tr')].some((row) =>
    Number(row.children[1].textContent) > 0 && row.children[3].textContent === '0'), null, { timeout: WAIT_MS });
  await page.locator('#topo-services li[data-service="catalog"].ok').first().waitFor({ timeout: WAIT_MS });
  step('recovered: products answer 200, a snapshot without 5xx, catalog ready');
  await page.locator('#inv-summary[data-status="held"]').waitFor({ timeout: WAIT_MS });
  step('the invariants still hold after the fault');
  await page.locator('#journey-list li[data-journey]').first().waitFor({ timeout: WAIT_MS });
  step(`journeys shown: ${(await page.locator('#journey-list').innerText()).replace(/\s+/g, ' ')}`);

  // A longer fault stopped by hand, with the keyboard: Enter on its Stop button.
  await page.selectOption('#fault-target', 'orders');
  await page.selectOption('#fault-kind', 'latency');
  await page.fill('#fault-form input[name=latency_ms]', '200');
  await page.fill('#fault-form input[name=duration_s]', '60');
  await page.locator('#fault-form button[type=submit]').click();
  const stop = page.locator('#fault-list .fault-item[data-target="orders"] button[data-stop]');
  await stop.waitFor({ timeout: WAIT_MS });
  await stop.focus();
  await page.keyboard.press('Enter');
  await page.locator('#fault-list .fault-item').waitFor({ state: 'detached', timeout: WAIT_MS });
  await page.locator('#console-lines li', { hasText: 'fault on orders removed' }).first().waitFor({ timeout: WAIT_MS });
  step('a 60 s latency fault on orders stopped with its button (console says removed)');

  // A TCP fault through the apphost, when this BFF has one: latency with jitter on catalog's
  // edges, listed with its time left, then stopped.
  const tcpOffered = await page.locator('#fault-layer option[value=tcp]:not([disabled])').count();
  if (tcpOffered) {
    await page.selectOption('#fault-layer', 'tcp');
    await page.selectOption('#fault-where', 'target:catalog');
    await page.selectOption('#fault-tcp-kind', 'latency');
    await page.fill('#fault-form input[name=tcp_ms]', '50');
    await page.fill('#fault-form input[name=jitter_ms]', '10');
    await page.fill('#fault-form input[name=duration_s]', '30');
    await page.locator('#fault-form button[type=submit]').click();
    const tcp = page.locator('#fault-list .fault-item[data-layer="tcp"]');
    await tcp.waitFor({ timeout: WAIT_MS });
    const tcpLeft = await tcp.locator('.left').innerText();
    if (!/s left/.test(tcpLeft)) throw new Error(`the TCP fault shows no time left: ${tcpLeft}`);
    step(`a TCP fault is listed: ${(await tcp.innerText()).replace(/\s+/g, ' ')}`);
    const refusal = await page.evaluate(async () => {
      const select = document.getElementById('fault-layer');
      select.value = 'process';
      select.dispatchEvent(new Event('change'));
      const process = document.getElementById('fault-process');
      process.value = 'postgres';
      process.dispatchEvent(new Event('change'));
      return document.getElementById('fault-refusal').textContent;
    });
    if (!/existing server/.test(refusal)) throw new Error(`no reason shown for the refused process actions: ${refusal}`);
    step(`process actions refused on postgres, with the reason: ${refusal}`);
    await tcp.locator('button[data-stop]').click();
    await tcp.waitFor({ state: 'detached', timeout: WAIT_MS });
    await page.selectOption('#fault-layer', 'http');
    step('the TCP fault stopped with its button');
  }

  // Keyboard: Tab reaches a control and its focus is drawn.
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
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, 'chaos-phone.png'), fullPage: true, type: 'png' });
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
console.log('ok: the chaos page passed in Chromium');
