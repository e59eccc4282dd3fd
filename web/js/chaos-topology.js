// The /chaos page's topology: every instance from the health snapshots (`GET /api/health`, then
// `health` events) with its id and status, its breaker state and whether it carried traffic in
// the last `metrics` snapshot, a fault badge on the services under a fault, an "ejected" badge
// with the time until its probe on a replica its breaker took out of the round-robin (from the
// `replica_*` breaker events and each metrics snapshot's breakers), and the dependencies; a
// `message` event lights its publisher and consumers for a moment.

import { el, fill, ms } from './dom.js';
import { on } from './live.js';

/** How long an instance stays lit after a message (ms). */
const MESSAGE_GLOW_MS = 1200;

let lastCalls = new Map();
/** Endpoints whose call counters moved since the previous metrics snapshot. */
let lit = new Set();
/** Breaker snapshot by endpoint (a replica's base URL). */
let breakers = new Map();
/** Services under a fault. */
let faulted = new Set();
let lastHealth = null;
/**
 * Replicas out of the round-robin, by endpoint: `{ probeAt }` (this browser's clock) while the
 * break runs, `{ probing: true }` once the next call is its probe.
 */
const ejected = new Map();
/** How often the time until probe is redrawn (ms). */
const PROBE_TICK_MS = 250;

/** "probe in 3.2 s", "probe due: the next call is it" or "probing", for an ejected replica. */
export function probeText(endpoint) {
  const out = ejected.get(endpoint);
  if (!out) return '';
  if (out.probing) return 'probing: the next call decides';
  const left = out.probeAt - performance.now();
  // Under a tenth of a second it would read "probe in 0.0 s": it is due.
  return left >= 100 ? `probe in ${(left / 1000).toFixed(1)} s` : 'probe due: the next call is it';
}

/** Whether the breaker of `endpoint` has its replica out of the round-robin. */
export function isEjected(endpoint) {
  return ejected.has(endpoint);
}

/** Redraws every time-until-probe on the page (topology and scoreboard) in place. */
function tickProbes() {
  for (const node of document.querySelectorAll('[data-probe]')) {
    const text = probeText(node.dataset.probe);
    if (text && node.textContent !== text) node.textContent = text;
  }
}

/** Follows a replica from a breaker snapshot (`state`, `retry_after_ms`) of the metrics. */
function trackSnapshot(breaker) {
  if (breaker.state === 'open') {
    const probeAt = performance.now() + (breaker.retry_after_ms || 0);
    ejected.set(breaker.endpoint, { probeAt });
  } else if (breaker.state === 'half_open') {
    ejected.set(breaker.endpoint, { probing: true });
  } else {
    ejected.delete(breaker.endpoint);
  }
}

/** Follows a replica from a `replica_*` breaker event as it happens. */
function trackReplica(change) {
  if (change.kind === 'replica_ejected') ejected.set(change.endpoint, { probeAt: performance.now() + (change.probe_in_ms || 0) });
  else if (change.kind === 'replica_probing') ejected.set(change.endpoint, { probing: true });
  else if (change.kind === 'replica_restored') ejected.delete(change.endpoint);
  else return false;
  return true;
}

/** `ok`, `warn`, `bad` or `unknown` for a health status. */
export function statusClass(status) {
  if (status === 'ready' || status === 'up' || status === 'healthy' || status === 'ok') return 'ok';
  if (status === 'degraded' || status === 'half_open') return 'warn';
  if (status === 'not_ready' || status === 'down' || status === 'open') return 'bad';
  return 'unknown';
}

function reasonOf(instance) {
  if (instance.reason) return instance.reason;
  const failing = (instance.checks || []).filter((c) => c.status && c.status !== 'up' && c.status !== 'ok');
  if (failing.length) return failing.map((c) => `${c.name}: ${c.reason || c.status}`).join('; ');
  return `answered in ${ms(instance.latency_ms)}`;
}

function describe(box) {
  return box.dataset.reason || box.textContent;
}

function focusable(node) {
  const info = document.getElementById('topo-info');
  const show = () => { info.textContent = describe(node); };
  node.addEventListener('mouseenter', show);
  node.addEventListener('focus', show);
  return node;
}

function instanceBox(instance) {
  const endpoint = instance.url.replace(/\/$/, '');
  const breaker = breakers.get(endpoint);
  const state = breaker ? breaker.state : 'no calls yet';
  const cls = ['inst', statusClass(instance.status)];
  if (breaker && breaker.state === 'open') cls.push('open');
  if (lit.has(endpoint)) cls.push('lit');
  if (faulted.has(instance.service)) cls.push('fault');
  const out = isEjected(endpoint);
  if (out) cls.push('ejected');
  const id = instance.instance_id || 'no id';
  const reason = `${instance.service} ${id}: ${instance.status} — ${reasonOf(instance)}; breaker ${state}` +
    `${out ? '; ejected from the round-robin until its probe' : ''}` +
    `${faulted.has(instance.service) ? '; a fault is injected on this service' : ''}`;
  return focusable(el('li', {
    class: cls.join(' '), tabindex: 0, 'data-service': instance.service, 'data-url': instance.url,
    'data-breaker': breaker ? breaker.state : 'none', 'data-reason': reason,
  },
  el('strong', {}, instance.service),
  el('span', { class: 'sub' }, id),
  el('span', { class: 'sub', 'data-field': 'status' }, instance.status),
  el('span', { class: 'sub breaker' }, `breaker ${state}`),
  faulted.has(instance.service) ? el('span', { class: 'badge' }, 'fault') : null,
  out ? el('span', { class: 'badge ejected' }, 'ejected') : null,
  out ? el('span', { class: 'sub probe', 'data-probe': endpoint }, probeText(endpoint)) : null));
}

function draw() {
  const health = lastHealth;
  if (!health || !Array.isArray(health.services)) return;
  const services = [...health.services].sort((a, b) =>
    a.service.localeCompare(b.service) || (a.instance_id || a.url).localeCompare(b.instance_id || b.url));
  fill(document.getElementById('topo-services'), services.map(instanceBox));
  const deps = (health.infrastructure || []).map((dep) => {
    const why = Object.entries(dep.reasons || {}).map(([who, r]) => `${who}: ${r}`).join('; ');
    const reason = `${dep.name}: ${dep.status} — ${why || `seen by ${(dep.observers || []).length} processes, slowest probe ${ms(dep.latency_ms)}`}`;
    return focusable(el('li', { class: `inst dep ${statusClass(dep.status)}`, tabindex: 0, 'data-reason': reason },
      el('strong', {}, dep.name), el('span', { class: 'sub' }, dep.status),
      el('span', { class: 'sub' }, `${(dep.observers || []).length} observers`)));
  });
  fill(document.getElementById('topo-deps'), deps.length ? deps : el('li', { class: 'muted' }, 'No dependency probed.'));
  const bff = document.getElementById('topo-bff');
  bff.className = `inst ${statusClass(health.status)}`;
  bff.querySelector('[data-field="status"]').textContent = `${health.status} · ${health.bff}`;
  bff.dataset.reason = `BFF ${health.bff}: ${health.status}; live backplane ${health.live?.mode || 'unknown'}, rate limits ${health.rate_limit?.mode || 'unknown'}`;
  const instances = services.length + 1;
  const up = services.filter((s) => statusClass(s.status) !== 'bad').length + 1;
  document.getElementById('topology-lede').textContent =
    `${up} of ${instances} processes answering, over ${(health.infrastructure || []).length} dependencies.`;
}

/** Draws one `ClusterHealth`. */
export function showHealth(health) {
  lastHealth = health;
  draw();
}

/** Marks the services with an active fault. */
export function showFaults(faults) {
  faulted = new Set((faults || []).map((f) => f.target));
  draw();
}

function showMetrics(event) {
  const metrics = event.data || {};
  const next = new Map();
  lit = new Set();
  breakers = new Map();
  for (const upstream of metrics.upstreams || []) {
    const c = upstream.counters || {};
    const calls = (c.successes || 0) + (c.failures || 0) + (c.rejected || 0);
    const before = lastCalls.get(upstream.endpoint);
    next.set(upstream.endpoint, calls);
    if (before !== undefined && calls > before) lit.add(upstream.endpoint);
    breakers.set(upstream.endpoint, upstream);
    trackSnapshot(upstream);
  }
  lastCalls = next;
  const bff = document.querySelector('#topo-bff [data-field="traffic"]');
  if (bff) bff.textContent = `${(metrics.requests_per_s || 0).toFixed(1)} req/s`;
  document.getElementById('topo-bff').classList.toggle('lit', (metrics.requests || 0) > 0);
  draw();
}

function lightMessage(event) {
  const message = event.data || {};
  const services = new Set([message.from, ...(message.to || [])]);
  for (const box of document.querySelectorAll('#topo-services [data-service]')) {
    if (!services.has(box.dataset.service)) continue;
    box.classList.add('msg');
    setTimeout(() => box.classList.remove('msg'), MESSAGE_GLOW_MS);
  }
}

/** Wires the topology to the live stream. */
export function start() {
  focusable(document.getElementById('topo-bff'));
  on('health', (event) => showHealth(event.data));
  on('metrics', showMetrics);
  on('message', lightMessage);
  setInterval(tickProbes, PROBE_TICK_MS);
  on('breaker', (event) => {
    const change = event.data || {};
    if (trackReplica(change)) {
      draw();
      return;
    }
    if (change.kind !== 'breaker_changed' || !breakers.has(change.endpoint)) return;
    breakers.get(change.endpoint).state = change.to;
    draw();
  });
}
