// The /chaos page's read-outs: the reaction scoreboard (each BFF replica's traffic, p99, 5xx,
// 429s, retries and fail-fasts from `metrics`; every breaker; saga outcomes from `saga` events;
// each database credential lease from `vault` events; outbox backlog and dead letters from the
// invariants), the invariants panel (`GET /api/chaos/invariants`, refreshed), the background
// journeys' latest outcomes (`demo` events with a `journey`) and the live console.

import { el, fill, ms } from './dom.js';
import { on } from './live.js';
import { isEjected, probeText, statusClass } from './chaos-topology.js';

/** How often the invariants are judged again (ms): each check reads every service's data. */
const INVARIANTS_EVERY_MS = 5000;
/** Console lines kept, as many as the stream's backfill. */
const CONSOLE_LINES = 200;

const metricsBySource = new Map();
const sagas = { started: 0, terminal: new Map(), compensations: 0 };
const seenOrders = new Set();
const leases = new Map();
const journeys = new Map();
let invariantsTimer = null;

function number(value, digits = 0) {
  return typeof value === 'number' && Number.isFinite(value) ? value.toFixed(digits) : '—';
}

function drawTraffic() {
  const rows = [...metricsBySource.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([source, m]) =>
    el('tr', {},
      el('th', { scope: 'row' }, source),
      el('td', {}, number(m.requests_per_s, 1)),
      el('td', {}, m.p99_ms === null || m.p99_ms === undefined ? '—' : ms(m.p99_ms)),
      el('td', { class: m.server_errors ? 'bad' : '' }, number(m.server_errors)),
      el('td', { class: m.rate_limited ? 'warn' : '' }, number(m.rate_limited)),
      el('td', { class: m.retries ? 'warn' : '' }, number(m.retries)),
      el('td', { class: m.fail_fast ? 'bad' : '' }, number(m.fail_fast))));
  fill(document.getElementById('score-traffic'), el('table', { id: 'score-table' },
    el('caption', {}, 'Traffic per BFF replica, last period'),
    el('thead', {}, el('tr', {}, ['BFF', 'req/s', 'p99', '5xx', '429s', 'retries', 'fail-fast'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows)));
}

function showMetrics(event) {
  const metrics = event.data || {};
  metricsBySource.set(event.source || 'bff', metrics);
  drawTraffic();
  document.getElementById('score-period').textContent =
    `Per BFF replica, over the last ${Math.round(metrics.period_s || 2)} s.`;
  const breakers = (metrics.upstreams || []).map((b) => {
    const c = b.counters || {};
    const cls = statusClass(b.state);
    const out = isEjected(b.endpoint);
    return el('li', { class: `chip ${cls === 'unknown' ? 'ok' : cls}`, 'data-endpoint': b.endpoint, 'data-service': b.service, 'data-state': b.state },
      `${b.service} ${b.endpoint.replace(/^https?:\/\//, '')}: ${out ? 'ejected' : b.state}`,
      out ? ', ' : null, out ? el('span', { 'data-probe': b.endpoint }, probeText(b.endpoint)) : null,
      ` (${c.successes || 0} ok, ${c.failures || 0} failed, ${c.rejected || 0} rejected)`);
  });
  fill(document.getElementById('score-breakers'), breakers.length ? breakers : el('li', {}, 'no upstream proxied'));
}

function showSaga(event) {
  const step = event.data || {};
  if (!step.from && !seenOrders.has(step.order_id)) {
    seenOrders.add(step.order_id);
    sagas.started += 1;
  }
  sagas.compensations += (step.compensations || []).length;
  if (step.terminal && step.from !== step.to) sagas.terminal.set(step.to, (sagas.terminal.get(step.to) || 0) + 1);
  const ends = [...sagas.terminal.entries()].map(([state, n]) => `${n} ${state}`).join(', ') || 'none finished yet';
  document.getElementById('score-sagas').textContent =
    `${sagas.started} started since this page opened; ${ends}; ${sagas.compensations} compensations issued.`;
}

function showVault(event) {
  const data = event.data || {};
  if (!data.instance) return;
  leases.set(data.instance, data.status || {});
  fill(document.getElementById('score-vault'), [...leases.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([instance, s]) =>
    el('li', { class: `chip ${s.state === 'ok' ? 'ok' : s.state === 'degraded' ? 'bad' : ''}` },
      `${instance}: ${s.state || 'unknown'}`,
      s.ttl_left_s !== undefined && s.ttl_left_s !== null ? `, ${s.ttl_left_s} s left` : '',
      `, ${s.rotations || 0} rotations`)));
}

/** A dotted, underscored name with break opportunities after each `.` and `_`. */
function breakable(name) {
  return name.split(/(?<=[._])/).flatMap((part, i) => (i ? [el('wbr'), part] : [part]));
}

function numbersText(numbers) {
  return Object.entries(numbers || {})
    .map(([k, v]) => `${k.replace(/_/g, ' ')} ${typeof v === 'object' ? JSON.stringify(v) : v}`)
    .join(' · ');
}

function showInvariants(report) {
  const list = (report.invariants || []).map((inv) => {
    const cls = inv.status === 'held' ? 'ok' : inv.status === 'violated' ? 'bad' : 'warn';
    return el('li', { class: `inv ${cls}`, 'data-name': inv.name, 'data-status': inv.status },
      el('span', { class: `verdict ${inv.status === 'held' ? 'pass' : inv.status === 'violated' ? 'fail' : 'inconclusive'}` }, inv.status),
      ' ', el('strong', {}, breakable(inv.name)), ' ',
      el('span', { class: 'muted' }, numbersText(inv.numbers)),
      inv.reason ? el('span', { class: 'muted' }, ` — ${inv.reason}`) : null,
      inv.offending_ids && inv.offending_ids.length ? el('span', {}, ` offending: ${inv.offending_ids.join(', ')}`) : null);
  });
  fill(document.getElementById('inv-list'), list);
  const held = (report.invariants || []).filter((i) => i.held).length;
  const summary = document.getElementById('inv-summary');
  summary.dataset.status = report.status;
  summary.className = `inv-summary ${report.status === 'held' ? 'ok' : report.status === 'violated' ? 'bad' : 'warn'}`;
  summary.textContent = report.status === 'held'
    ? `All ${held} invariants held.`
    : `${held} of ${(report.invariants || []).length} held; the report is ${report.status}.`;
  document.getElementById('inv-at').textContent = `checked at ${new Date().toLocaleTimeString()}`;
  showMessaging(report.invariants || []);
}

/** Outbox backlog and dead letters per service, from the invariants' numbers. */
function showMessaging(invariants) {
  const per = (suffix, field) => invariants.filter((i) => i.name.endsWith(suffix)).map((i) =>
    el('li', { class: `chip ${i.status === 'held' ? 'ok' : i.status === 'violated' ? 'bad' : 'warn'}` },
      `${i.name.split('.')[0]}: ${i.numbers && i.numbers[field] !== undefined ? i.numbers[field] : i.status}`));
  const outbox = per('.outbox_drains', 'pending');
  const dead = per('.dead_letters', 'outstanding');
  fill(document.getElementById('score-messaging'),
    el('span', {}, 'Outbox backlog (messages pending)'),
    el('ul', { class: 'chips', 'aria-label': 'Outbox backlog per service' }, outbox.length ? outbox : el('li', {}, 'not reported')),
    el('span', {}, 'Dead letters outstanding'),
    el('ul', { class: 'chips', 'aria-label': 'Dead letters per service' }, dead.length ? dead : el('li', {}, 'not reported')));
}

async function refreshInvariants() {
  clearTimeout(invariantsTimer);
  try {
    const response = await fetch('/api/chaos/invariants', { credentials: 'same-origin', headers: { accept: 'application/json' } });
    if (response.ok) showInvariants(await response.json());
    else document.getElementById('inv-summary').textContent = `The invariants are not available: HTTP ${response.status}`;
  } catch (error) {
    document.getElementById('inv-summary').textContent = `The invariants are not available: ${error}`;
  }
  invariantsTimer = setTimeout(refreshInvariants, INVARIANTS_EVERY_MS);
}

function showJourney(event) {
  const data = event.data || {};
  if (!data.journey) return;
  const outcome = data.outcome || {};
  const seen = journeys.get(data.journey) || { pass: 0, other: 0 };
  if (outcome.verdict === 'pass') seen.pass += 1;
  else seen.other += 1;
  seen.last = outcome;
  seen.at = event.at;
  journeys.set(data.journey, seen);
  fill(document.getElementById('journey-list'), [...journeys.entries()].map(([name, j]) => {
    const verdict = j.last.verdict || 'unknown';
    return el('li', { 'data-journey': name },
      el('span', { class: `verdict ${verdict}` }, verdict), ' ', el('strong', {}, name), ' ',
      el('span', {}, j.last.summary || ''), ' ',
      el('span', { class: 'muted' }, `(${j.pass} pass, ${j.other} not, since this page opened)`));
  }));
}

function showConsole(event) {
  const line = event.data || {};
  const list = document.getElementById('console-lines');
  const at = event.at ? new Date(event.at).toLocaleTimeString() : '';
  list.append(el('li', { class: line.level || 'info' }, el('span', { class: 'at' }, at), ' ',
    el('span', { class: 'src' }, event.source || ''), ' ', line.text || ''));
  while (list.children.length > CONSOLE_LINES) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

/** Wires the read-outs to the live stream and starts judging the invariants. */
export function start() {
  on('metrics', showMetrics);
  on('saga', showSaga);
  on('vault', showVault);
  on('demo', showJourney);
  on('console', showConsole);
  document.getElementById('inv-refresh').addEventListener('click', refreshInvariants);
  refreshInvariants();
}
