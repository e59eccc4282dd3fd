// Browser test of the chaos page (`GET /chaos`), in Chromium or Firefox (browser.mjs).
//
//   node web/tests/chaos.mjs <bff url> <screenshot dir> [chromium|firefox]
//
// Loads the page with no console errors and waits for it to be live with the topology drawn;
// injects a 503 fault on catalog for a few seconds from the page's own form; sees it listed
// with its time left counting down, the catalog instance marked as faulted in the topology, and
// (with traffic the test drives through `/api/products` from outside the page) the scoreboard's
// 5xx column go red; sees the fault end by itself and the recovery (the badge gone, catalog
// answering, a snapshot without 5xx); sees the invariants panel report every invariant held and
// what a visitor may not do shown disabled with the reason; injects a fault that counts against
// the breaker and sees catalog's replica ejected with its time until probe (topology, scoreboard,
// console), stops it and sees the probe let it back in; stops a latency fault with its Stop button
// from the keyboard; when the BFF has an apphost, injects a TCP latency fault from the form, sees
// it listed with its time left and stops it, and sees the refused process actions' reason;
// checks Tab shows focus; then resizes to 360 px and checks nothing overflows
// horizontally. Saves desktop (light and dark), phone and ejected-replica screenshots.
// Exits 0 on success, 1 with the reason otherwise. services/bff/tests/api/pages.rs runs it.

import { run, step } from './browser.mjs';

/** The whole run's bound: a stuck page fails the test instead of hanging it. */
const RUN_BUDGET_MS = 90_000;
/** One wait's bound: snapshots come every 2 s, the invariants every 5 s. */
const WAIT_MS = 15_000;
/** The injected fault's duration: long enough to see it, short enough to watch it end. */
const FAULT_S = 5;

const SECTIONS = Object.fromEntries(['topology', 'faults', 'scoreboard', 'invariants', 'journeys', 'console']
  .map((id) => [id, `#${id}`]));

/** Calls `/api/products` `count` times from outside the page; answers the statuses seen. */
async function traffic(base, count) {
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

/** Injects a fault from the page's own form. */
async function inject(b, target, kind, fields) {
  await b.select('#fault-target', target);
  await b.select('#fault-kind', kind);
  for (const [name, value] of Object.entries(fields)) await b.fill(`#fault-form input[name=${name}]`, String(value));
  await b.click('#fault-form button[type=submit]');
}

async function live(b, base) {
  await b.goto(`${base}/chaos`);
  await b.waitFor('#conn[data-state="live"]', { timeout: WAIT_MS });
  step('the live stream delivered its first snapshot');
  await b.waitFor('#topo-services li[data-service="catalog"].ok', { timeout: WAIT_MS });
  step(`the topology shows ${await b.count('#topo-services li[data-service]')} instances, catalog ready`);
  await b.waitFor('#score-table tbody tr', { timeout: WAIT_MS });
  step('the scoreboard shows a metrics snapshot');
  const disabled = await b.count('#not-here button:disabled');
  if (disabled < 1) throw new Error('the faults not available here are not shown');
  step(`${disabled} faults shown as not available to a visitor, disabled with the reason`);
  await b.waitFor('#inv-summary[data-status="held"]', { timeout: WAIT_MS });
  const held = await b.count('#inv-list li[data-status="held"]');
  const all = await b.count('#inv-list li');
  if (held !== all || all === 0) throw new Error(`invariants: ${held} of ${all} held`);
  step(`invariants: all ${all} held`);
}

/** A short 503 fault on catalog: listed, counting down, seen in the topology and the scores. */
async function faultAndRecovery(b, base, shots) {
  await inject(b, 'catalog', 'status', { status: 503, probability: 100, duration_s: FAULT_S });
  const item = '#fault-list .fault-item[data-target="catalog"]';
  await b.waitFor(item, { timeout: WAIT_MS });
  const left = await b.text(`${item} .left`);
  if (!/s left/.test(left)) throw new Error(`the fault shows no time left: ${left}`);
  await b.pause(600);
  const later = await b.text(`${item} .left`);
  if (parseFloat(later) >= parseFloat(left)) throw new Error(`the time left does not count down: ${left} then ${later}`);
  step(`the fault is listed: ${(await b.text(item)).replace(/\s+/g, ' ')}, counting down (${left} → ${later})`);
  await b.waitFor('#topo-services li[data-service="catalog"].fault', { timeout: WAIT_MS });
  step('the topology marks catalog as faulted');

  const during = await traffic(base, 10);
  if (!during.includes(503)) throw new Error(`the fault did not fail catalog's calls: ${during}`);
  await b.waitFor('#score-table td.bad', { timeout: WAIT_MS });
  step(`the scoreboard shows the failures (products answered ${[...new Set(during)].join(', ')})`);
  await b.evaluate(() => window.scrollTo(0, 0));
  await b.screenshot(shots, 'chaos-desktop', { fullPage: true });
  await b.sections('chaos-desktop', SECTIONS);
  await b.darkScreenshot(shots, 'chaos-desktop-dark');

  // It ends by itself.
  await b.waitFor('#fault-list .fault-item', { gone: true, timeout: WAIT_MS });
  await b.waitFor('#topo-services li[data-service="catalog"].fault', { gone: true, timeout: WAIT_MS });
  await b.waitFor('#console-lines li', { text: 'fault on catalog expired', timeout: WAIT_MS });
  step('the fault ended by itself (listed no more, console says expired)');
  const after = await traffic(base, 3);
  if (after.some((s) => s !== 200)) throw new Error(`catalog did not recover: ${after}`);
  // A snapshot that carried traffic and no 5xx: req/s is the 2nd column, 5xx the 4th.
  await b.until(() => [...document.querySelectorAll('#score-table tbody tr')].some((row) =>
    Number(row.children[1].textContent) > 0 && row.children[3].textContent === '0'), null, WAIT_MS);
  await b.waitFor('#topo-services li[data-service="catalog"].ok', { timeout: WAIT_MS });
  step('recovered: products answer 200, a snapshot without 5xx, catalog ready');
  await b.waitFor('#inv-summary[data-status="held"]', { timeout: WAIT_MS });
  step('the invariants still hold after the fault');
  await b.waitFor('#journey-list li[data-journey]', { timeout: WAIT_MS });
  step(`journeys shown: ${(await b.text('#journey-list')).replace(/\s+/g, ' ')}`);
}

/**
 * A fault that counts against the breaker: catalog's replica is ejected, shown as such with its
 * time until probe in the topology and the scoreboard; stopped, the next call after the break
 * probes it back in.
 */
async function ejection(b, base, shots) {
  await b.setChecked('#fault-form input[name=trips_breaker]', true);
  await inject(b, 'catalog', 'status', { status: 503, probability: 100, duration_s: 60 });
  await b.setChecked('#fault-form input[name=trips_breaker]', false);
  const item = '#fault-list .fault-item[data-target="catalog"]';
  await b.waitFor(item, { timeout: WAIT_MS });
  // A GET is tried up to three times: five reads fail far more than the half of at least five
  // calls in its window that opens the breaker, whatever successes the window already holds.
  await traffic(base, 5);
  const box = '#topo-services li[data-service="catalog"].ejected';
  await b.waitFor(`${box} [data-probe]`, { text: 'probe', timeout: WAIT_MS });
  const probe = await b.text(`${box} [data-probe]`);
  await b.waitFor('#score-breakers li[data-service="catalog"]', { text: 'ejected', timeout: WAIT_MS });
  await b.waitFor('#console-lines li', { text: 'replica ejected', timeout: WAIT_MS });
  step(`catalog's replica ejected: the topology says "${probe}", so do the scoreboard and the console`);
  await b.elementScreenshot(shots, 'chaos-ejected', '#topology');

  await b.click(`${item} button[data-stop]`);
  await b.waitFor('#fault-list .fault-item', { gone: true, timeout: WAIT_MS });
  const deadline = Date.now() + WAIT_MS;
  while ((await traffic(base, 1))[0] !== 200) {
    if (Date.now() > deadline) throw new Error('catalog never answered again after the fault was stopped');
    await b.pause(250);
  }
  await b.waitFor(box, { gone: true, timeout: WAIT_MS });
  await b.waitFor('#console-lines li', { text: 'back in the round-robin', timeout: WAIT_MS });
  step('stopped: the probe let the replica back in (ejected badge gone, console says so)');
}

/** A longer fault stopped by hand, with the keyboard: Enter on its Stop button. */
async function stopByKeyboard(b) {
  await inject(b, 'orders', 'latency', { latency_ms: 200, duration_s: 60 });
  const stop = '#fault-list .fault-item[data-target="orders"] button[data-stop]';
  await b.waitFor(stop, { timeout: WAIT_MS });
  await b.focus(stop);
  await b.press('Enter');
  await b.waitFor('#fault-list .fault-item', { gone: true, timeout: WAIT_MS });
  await b.waitFor('#console-lines li', { text: 'fault on orders removed', timeout: WAIT_MS });
  step('a 60 s latency fault on orders stopped with its button (console says removed)');
}

/** A TCP fault through the apphost, when this BFF has one: latency with jitter on catalog's
 * edges, listed with its time left, then stopped; the refused process actions give their reason. */
async function tcpFault(b) {
  if (!(await b.count('#fault-layer option[value=tcp]:not([disabled])'))) {
    step('no apphost behind this BFF: TCP and process faults not offered');
    return;
  }
  await b.select('#fault-layer', 'tcp');
  await b.select('#fault-where', 'target:catalog');
  await b.select('#fault-tcp-kind', 'latency');
  await b.fill('#fault-form input[name=tcp_ms]', '50');
  await b.fill('#fault-form input[name=jitter_ms]', '10');
  await b.fill('#fault-form input[name=duration_s]', '30');
  await b.click('#fault-form button[type=submit]');
  const tcp = '#fault-list .fault-item[data-layer="tcp"]';
  await b.waitFor(tcp, { timeout: WAIT_MS });
  const left = await b.text(`${tcp} .left`);
  if (!/s left/.test(left)) throw new Error(`the TCP fault shows no time left: ${left}`);
  step(`a TCP fault is listed: ${(await b.text(tcp)).replace(/\s+/g, ' ')}`);
  const refusal = await b.evaluate(() => {
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
  await b.click(`${tcp} button[data-stop]`);
  await b.waitFor(tcp, { gone: true, timeout: WAIT_MS });
  await b.select('#fault-layer', 'http');
  step('the TCP fault stopped with its button');
}

await run('chaos.mjs', RUN_BUDGET_MS, async (b, { base, shots }) => {
  await live(b, base);
  await faultAndRecovery(b, base, shots);
  await ejection(b, base, shots);
  await stopByKeyboard(b);
  await tcpFault(b);
  await b.checkFocusRing();
  await b.checkLiveRegions();
  await b.checkPhone();
  await b.evaluate(() => window.scrollTo(0, 0));
  await b.screenshot(shots, 'chaos-phone', { fullPage: true });
  await b.sections('chaos-phone', SECTIONS);
});
