// The hero's count and the cluster diagram: every box coloured by the latest health snapshot
// (`GET /api/health`, then the `health` events), its reason shown on hover and focus, and each
// BFF→replica edge lit when that replica's breaker counters moved since the previous `metrics`
// snapshot; the bus and the taps of a message's publisher and consumers light for each `message`
// event.

import { fill, ms } from './dom.js';
import { on } from './live.js';

/** Numbers a person reads in the hero. */
const WORDS = ['Zero', 'One', 'Two', 'Three', 'Four', 'Five', 'Six', 'Seven', 'Eight', 'Nine', 'Ten'];
/** The diagram's service boxes. */
const SERVICE_NODES = ['identity', 'catalog-1', 'catalog-2', 'orders', 'payments', 'checkout', 'psp'];
/** How long the bus stays lit after a message (ms). */
const BUS_GLOW_MS = 1200;

const reasons = new Map();
let lastCounters = new Map();
let urlToNode = new Map();
let busTimer = null;

function statusClass(status) {
  if (status === 'ready' || status === 'up' || status === 'healthy') return 'ok';
  if (status === 'degraded') return 'warn';
  if (status === 'not_ready' || status === 'down') return 'bad';
  return 'unknown';
}

function node(name) {
  return document.querySelector(`#diagram [data-node="${name}"]`);
}

function paint(name, status, reason, sub) {
  const box = node(name);
  if (!box) return;
  box.classList.remove('ok', 'warn', 'bad', 'unknown');
  box.classList.add(statusClass(status));
  const label = `${box.getAttribute('aria-label').split(':')[0]}: ${status}${reason ? ` — ${reason}` : ''}`;
  box.setAttribute('aria-label', label);
  reasons.set(name, label);
  if (sub !== undefined) {
    const text = box.querySelector('text.sub');
    if (text) text.textContent = sub;
  }
  for (const dot of document.querySelectorAll(`[data-health="${name.replace(/-\d+$/, '')}"]`)) {
    dot.classList.remove('ok', 'warn', 'bad', 'unknown');
    dot.classList.add(statusClass(status));
    dot.setAttribute('title', label);
  }
}

function instanceReason(instance) {
  if (instance.reason) return instance.reason;
  const failing = (instance.checks || []).filter((c) => c.status && c.status !== 'up' && c.status !== 'ok');
  if (failing.length) return failing.map((c) => `${c.name}: ${c.reason || c.status}`).join('; ');
  return `answered in ${ms(instance.latency_ms)}`;
}

/** The diagram's name for an instance's base URL (`catalog-2`), or the URL itself. */
export function instanceName(url) {
  return urlToNode.get(url) || url;
}

/** Draws one `ClusterHealth`. */
export function showHealth(health) {
  if (!health || !Array.isArray(health.services)) return;
  urlToNode = new Map();
  const byService = new Map();
  for (const instance of health.services) {
    if (!byService.has(instance.service)) byService.set(instance.service, []);
    byService.get(instance.service).push(instance);
  }
  for (const [service, instances] of byService) {
    instances.sort((a, b) => (a.instance_id || a.url).localeCompare(b.instance_id || b.url));
    instances.forEach((instance, i) => {
      const name = service === 'catalog' ? `catalog-${i + 1}` : service;
      urlToNode.set(instance.url, name);
      const sub = service === 'psp' ? 'sandbox' : (instance.instance_id || instance.status);
      paint(name, instance.status, instanceReason(instance), sub);
    });
  }
  for (const name of SERVICE_NODES) {
    if (![...urlToNode.values()].includes(name)) {
      paint(name, 'not configured', 'this BFF has no upstream for it', 'not configured');
    }
  }
  paint('bff', health.status === 'healthy' ? 'ready' : 'degraded',
    `${health.bff}; live backplane ${health.live && health.live.mode ? health.live.mode : 'unknown'}, rate limits ${health.rate_limit && health.rate_limit.mode ? health.rate_limit.mode : 'unknown'}`);
  for (const dep of health.infrastructure || []) {
    const why = Object.entries(dep.reasons || {}).map(([who, r]) => `${who}: ${r}`).join('; ');
    paint(dep.name, dep.status, why || `seen by ${(dep.observers || []).length} processes, slowest probe ${ms(dep.latency_ms)}`);
  }
  if (!(health.infrastructure || []).some((d) => d.name === 'openbao')) {
    paint('openbao', 'not probed', 'the BFF was not given OpenBao\'s address');
  }
  hero(health, byService);
}

function hero(health, byService) {
  const services = [...byService.keys()].filter((s) => s !== 'psp');
  const count = services.length + 1; // the BFF itself
  const word = WORDS[count] || String(count);
  document.getElementById('hero-count').textContent = `${word} services`;
  document.title = `Lab — ${word.toLowerCase()} services, one cluster`;
  const instances = health.services.length + 1;
  const up = health.services.filter((s) => s.status === 'ready' || s.status === 'degraded').length + 1;
  const deps = (health.infrastructure || []).length;
  const catalogs = (byService.get('catalog') || []).length;
  const named = services.map((s) => (s === 'catalog' && catalogs > 1 ? `catalog ×${catalogs}` : s));
  if (byService.has('psp')) named.push('the sandbox PSP');
  fill(document.getElementById('hero-running'),
    `${up} of ${instances} processes answering right now — the BFF, ${named.join(', ')} — `,
    `over ${deps} infrastructure dependencies.`);
  document.getElementById('cluster-lede').textContent =
    `One BFF, ${services.length} services${catalogs > 1 ? ` (catalog ×${catalogs})` : ''}${byService.has('psp') ? ', a sandbox payment provider' : ''} and ${deps} infrastructure dependencies.`;
}

function showMetrics(metrics) {
  const counters = new Map();
  for (const upstream of metrics.upstreams || []) {
    const c = upstream.counters || {};
    counters.set(upstream.endpoint, (c.successes || 0) + (c.failures || 0) + (c.rejected || 0));
    const name = urlToNode.get(upstream.endpoint);
    const edge = name && document.querySelector(`#diagram [data-edge="bff-${name}"]`);
    if (!edge) continue;
    const before = lastCounters.get(upstream.endpoint);
    edge.classList.toggle('lit', before !== undefined && counters.get(upstream.endpoint) > before);
    edge.classList.toggle('open', upstream.state === 'open');
  }
  lastCounters = counters;
  document.querySelector('#diagram [data-edge="browser-bff"]')?.classList.toggle('lit', (metrics.requests || 0) > 0);
  const p99 = metrics.p99_ms === null || metrics.p99_ms === undefined ? '—' : ms(metrics.p99_ms);
  document.getElementById('metrics').textContent =
    `Traffic through this BFF: ${(metrics.requests_per_s || 0).toFixed(1)} req/s, p99 ${p99}, ` +
    `${metrics.server_errors || 0} 5xx, ${metrics.rate_limited || 0} 429s, ${metrics.retries || 0} retries, ` +
    `${metrics.fail_fast || 0} fail-fast (last ${Math.round(metrics.period_s || 2)} s).`;
}

/** Lights the bus and the taps of the message's publisher and consumers for a moment. */
function lightBus(event) {
  const message = (event && event.data) || {};
  const services = new Set([message.from, ...(message.to || [])]);
  const lines = [...document.querySelectorAll('#diagram [data-edge="bus"], #diagram [data-bus]')]
    .filter((line) => !line.dataset.bus || services.has(line.dataset.bus));
  for (const line of lines) line.classList.add('lit');
  clearTimeout(busTimer);
  busTimer = setTimeout(() => {
    for (const line of document.querySelectorAll('#diagram .lit[data-bus], #diagram [data-edge="bus"]')) line.classList.remove('lit');
  }, BUS_GLOW_MS);
}

/** Wires the diagram to the live stream and its boxes to the reason line. */
export function start() {
  on('health', (event) => showHealth(event.data));
  on('metrics', (event) => showMetrics(event.data || {}));
  on('message', lightBus);
  // A breaker's change shows at once, without waiting for the next metrics snapshot.
  on('breaker', (event) => {
    const change = event.data || {};
    if (change.kind !== 'breaker_changed') return;
    const name = urlToNode.get(change.endpoint);
    const edge = name && document.querySelector(`#diagram [data-edge="bff-${name}"]`);
    if (edge) edge.classList.toggle('open', change.to === 'open');
  });
  const info = document.getElementById('node-info');
  for (const box of document.querySelectorAll('#diagram .node')) {
    const show = () => {
      info.textContent = reasons.get(box.dataset.node) || box.getAttribute('aria-label');
    };
    box.addEventListener('mouseenter', show);
    box.addEventListener('focus', show);
  }
}
