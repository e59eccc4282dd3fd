// Browser test of the Lab page (`GET /`), in Chromium or Firefox (browser.mjs).
//
//   node web/tests/lab.mjs <bff url> <screenshot dir> [chromium|firefox]
//
// Loads the page with no console errors, sees it say "reconnecting" while the test refuses the
// live stream and "live" once it is let through and the first snapshot arrives, runs every
// "Drive it" panel to a `pass` verdict (the identity panel's sign-in round showing the token's
// claims and never the token, then the JTI revocation timed in catalog and orders), starts a saga and waits for the message flow to reach
// `Completed` from the live events (and a last-unit race to one Completed, one Rejected, and an
// unpaid order to Cancelled when its payment window expires), checks
// the decision records are rendered and Tab shows focus, then resizes to 360 px and checks
// nothing overflows horizontally. Saves desktop, dark and phone screenshots.
// Exits 0 on success, 1 with the reason otherwise. services/bff/tests/api/pages.rs runs it.

import { run, step } from './browser.mjs';

/** The whole run's bound: a stuck page fails the test instead of hanging it (the outbox and
 * vault-rotation demos add a few seconds each). */
const RUN_BUDGET_MS = 120_000;
/** One demo's bound: the slowest (a saga over RabbitMQ, the breaker's sick upstream) take ~1-2 s. */
const DEMO_TIMEOUT_MS = 20_000;

const SECTIONS = Object.fromEntries(['cluster', 'svc-bff', 'svc-identity', 'svc-catalog', 'svc-orders',
  'svc-payments', 'svc-checkout', 'flow', 'concurrency', 'decisions'].map((id) => [id, `#${id}`]));
SECTIONS.hero = 'section.hero';

async function verdictOf(b, selector) {
  await b.waitFor(`${selector} .result [data-verdict]`, { timeout: DEMO_TIMEOUT_MS });
  const value = await b.attr(`${selector} .result [data-verdict]`, 'data-verdict');
  if (value !== 'pass') throw new Error(`${selector}: verdict ${value}: ${await b.text(`${selector} .result`)}`);
}

/** Submits `form` (by its data-form) and waits for a pass in its panel. */
async function drive(b, form, panel, before) {
  if (before) await before();
  await b.click(`form[data-form="${form}"] button[type=submit]`);
  await b.waitFor(`${panel}[aria-busy="false"] .result [data-verdict]`, { timeout: DEMO_TIMEOUT_MS });
  await verdictOf(b, panel);
  step(`${form}: pass — ${(await b.text(`${panel} .result .verdict-line`)).trim()}`);
}

/** With the stream refused the page says it is reconnecting; let through, it goes live. */
async function connectionStates(b, base) {
  await b.refuseStream(true);
  await b.goto(`${base}/`);
  await b.waitFor('#conn[data-state="reconnecting"]', { text: 'reconnecting', timeout: DEMO_TIMEOUT_MS });
  step('with the stream refused, the page says "reconnecting"');
  await b.refuseStream(false);
  await b.waitFor('#conn[data-state="live"]', { timeout: DEMO_TIMEOUT_MS });
  step('let through, the live stream delivered its first snapshot');
  const hero = await b.text('#hero-count');
  if (!/services$/.test(hero) || hero === 'Services') throw new Error(`the hero did not count what runs: ${hero}`);
  step(`hero: ${hero}`);
  await b.waitFor('#diagram [data-node="catalog-2"].ok', { timeout: DEMO_TIMEOUT_MS });
  step('the diagram shows both catalog replicas ready');
}

async function demos(b) {
  await drive(b, 'rate-limit', '#drive-rate-limit');
  if ((await b.count('#rl-results .chip.bad')) === 0) throw new Error('the burst refused nothing');
  await b.waitFor('#rl-countdown', { text: 'Retry-After', timeout: 5_000 });
  await drive(b, 'race', '#drive-race');
  const wins = await b.count('#race-results .chip.ok');
  const lost = await b.count('#race-results .chip.warn');
  if (wins !== 1 || lost < 1) throw new Error(`race: ${wins} winners, ${lost} 412s`);
  await drive(b, 'cache', '#drive-cache');
  await drive(b, 'last-unit', '#drive-last-unit');
  await drive(b, 'idempotency', '#drive-idempotency');
  await drive(b, 'outbox', '#drive-outbox');
  await drive(b, 'vault-rotation', '#drive-vault');
  await drive(b, 'payment-declined', '#drive-declined');
}

async function sagas(b) {
  await b.click('#saga-form button[data-scenario="success"]');
  await b.waitFor('#saga li[data-state="Completed"].live', { timeout: DEMO_TIMEOUT_MS });
  await b.waitFor('#flow-result [data-verdict]', { timeout: DEMO_TIMEOUT_MS });
  const sagaVerdict = await b.attr('#flow-result [data-verdict]', 'data-verdict');
  if (sagaVerdict !== 'pass') throw new Error(`saga: verdict ${sagaVerdict}`);
  step(`saga: Completed from the live events (${await b.count('#messages li')} messages shown)`);
  await b.click('#saga-form button[data-scenario="last-unit-race"]');
  await b.waitFor('#saga-fail li[data-state="Rejected"].live', { timeout: DEMO_TIMEOUT_MS });
  await b.waitFor('#saga li[data-state="Completed"].live', { timeout: DEMO_TIMEOUT_MS });
  await b.waitFor('#flow-result [data-verdict]', { timeout: DEMO_TIMEOUT_MS });
  if ((await b.attr('#flow-result [data-verdict]', 'data-verdict')) !== 'pass') {
    throw new Error(`last-unit race: ${await b.text('#flow-result')}`);
  }
  step('last-unit race: one order Completed, one Rejected, from the live events');
  // The payment-expired saga: the result is replaced, so wait for the busy buttons to free up.
  await b.click('#saga-form button[data-scenario="payment-expired"]');
  await b.waitFor('#saga-fail li[data-state="Cancelled"].live', { timeout: DEMO_TIMEOUT_MS });
  await b.waitFor('#saga-form button[data-scenario="payment-expired"]:not([disabled])', { timeout: DEMO_TIMEOUT_MS });
  if ((await b.attr('#flow-result [data-verdict]', 'data-verdict')) !== 'pass') {
    throw new Error(`payment expired: ${await b.text('#flow-result')}`);
  }
  step('payment expired: Cancelled from the live events, stock back');
}

async function breaker(b) {
  await drive(b, 'circuit-breaker', '#drive-breaker');
  if ((await b.count('#drive-breaker .states li.on[data-state="open"]')) !== 1) {
    throw new Error('the breaker state machine does not show open');
  }
  // Heal the catalog again: the checkbox off recovers it and closes the breakers.
  await drive(b, 'circuit-breaker', '#drive-breaker', () => b.setChecked('#drive-breaker input[name=upstream_failing]', false));
}

/** The identity panel: a whole sign-in round, its claims shown and its token never, then the
 * server-side revocation timing. */
async function identity(b) {
  // After logout the panel presents the old token to /me on purpose: that 401 is the point.
  b.expectStatus('/api/auth/me', 401);
  await drive(b, 'identity', '#drive-identity');
  const calls = await b.evaluate(() => [...document.querySelectorAll('#id-steps [data-call]')]
    .map((chip) => `${chip.dataset.call} ${chip.dataset.status}`).join(', '));
  if (calls !== 'register 201, login 200, me 200, logout 204, me again 401') throw new Error(`identity calls: ${calls}`);
  const sub = await b.text('#id-claims [data-claim="sub"]');
  const me = await b.text('#id-me [data-me="id"]');
  if (sub !== me) throw new Error(`the token's sub ${sub} is not /me's id ${me}`);
  const jti = await b.text('#id-claims [data-claim="jti"]');
  if (!/^[0-9a-f-]{1,8}…$/.test(jti)) throw new Error(`the jti is not shown as a prefix: ${jti}`);
  for (const claim of ['roles', 'exp']) await b.text(`#id-claims [data-claim="${claim}"]`);
  // A JWT (header or payload) starts with "eyJ": nowhere in the page, text or markup.
  if (await b.evaluate(() => document.documentElement.outerHTML.includes('eyJ'))) throw new Error('a token is on the page');
  step(`identity: ${calls}; claims shown: sub ${sub}, jti ${jti}; no token on the page`);
  await b.click('#drive-identity [data-action="jti-revocation"]');
  await b.waitFor('#drive-identity[aria-busy="false"] .result [data-verdict]', { timeout: DEMO_TIMEOUT_MS });
  await verdictOf(b, '#drive-identity');
  step(`jti revocation: pass — ${(await b.text('#drive-identity .result .verdict-line')).trim()}`);
}

async function decisions(b) {
  const adrs = await b.count('#adrs details.adr');
  if (adrs < 1) throw new Error('no decision record rendered');
  await b.click('#adrs details.adr summary');
  step(`${adrs} decision records rendered, the first expands`);
}

await run('lab.mjs', RUN_BUDGET_MS, async (b, { base, shots }) => {
  // A refusal a panel shows on purpose (429) is not an error; anything else 4xx/5xx is.
  b.tolerate(429);
  await connectionStates(b, base);
  await demos(b);
  await sagas(b);
  await breaker(b);
  await identity(b);
  await decisions(b);
  await b.checkFocusRing();
  await b.checkLiveRegions();

  await b.screenshot(shots, 'lab-desktop', { fullPage: true });
  await b.darkScreenshot(shots, 'lab-desktop-dark');
  await b.sections('desktop', SECTIONS);

  await b.checkPhone();
  await b.screenshot(shots, 'lab-phone', { fullPage: true });
  await b.sections('phone', SECTIONS);
});
