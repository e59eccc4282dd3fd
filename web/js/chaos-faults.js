// The /chaos page's fault controls: the form that injects a fault (`POST /api/chaos/faults`) —
// HTTP-level on a service, or TCP on an edge and process faults relayed to the apphost (the
// `chaos-layers` module) — the active faults of every layer with their time left counting down
// and a stop button each (`DELETE /api/chaos/faults/{id}`), kept current by `GET /api/chaos` and
// the `chaos` events every viewer gets; and what this visitor may not do, shown disabled with
// the reason rather than hidden.

import { el, fill, postJson, problemText } from './dom.js';
import { on } from './live.js';
import * as layers from './chaos-layers.js';

/** How often the time left is redrawn (ms). */
const TICK_MS = 250;

let faults = [];
/** Server clock minus this browser's, from `GET /api/chaos` (expiries are server times). */
let skewMs = 0;
let listeners = [];

/** Calls `handler(faults)` whenever the active faults change. */
export function onFaults(handler) {
  listeners.push(handler);
}

function describeHttp(fault) {
  const parts = [];
  if (fault.status) parts.push(`${fault.status} on ${Math.round((fault.probability ?? 1) * 100)} % of calls`);
  if (fault.latency_ms) parts.push(`+${fault.latency_ms} ms`);
  if (fault.trips_breaker) parts.push('counts against the breaker');
  return parts.join(', ') || 'no effect';
}

/** One line for any fault. */
function describe(record) {
  return record.layer && record.layer !== 'http' ? layers.describe(record) : describeHttp(record.fault || {});
}

function leftMs(record) {
  return Math.max(0, record.expires_at_ms - (Date.now() + skewMs));
}

function drawList() {
  const list = document.getElementById('fault-list');
  // The list is redrawn on every chaos update: a keyboard user on a Stop button keeps it.
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.stop : null;
  if (!faults.length) {
    fill(list, el('li', { class: 'muted' }, 'None.'));
    return;
  }
  fill(list, faults.map((record) => {
    const stop = el('button', { type: 'button', 'data-stop': record.id, 'aria-label': `Stop the fault on ${record.target}` }, 'Stop');
    stop.addEventListener('click', () => remove(record, stop));
    return el('li', { class: 'fault-item', 'data-target': record.target, 'data-id': record.id, 'data-layer': record.layer || 'http' },
      el('strong', {}, record.target), ' ', el('span', {}, describe(record)), ' ',
      el('span', { class: 'left', 'data-left': record.id, 'aria-live': 'off' }, ''), ' ', stop);
  }));
  if (focused) list.querySelector(`button[data-stop="${CSS.escape(focused)}"]`)?.focus();
  tick();
}

function tick() {
  for (const record of faults) {
    const node = document.querySelector(`[data-left="${record.id}"]`);
    if (!node) continue;
    const left = leftMs(record);
    node.textContent = left > 0 ? `${(left / 1000).toFixed(1)} s left` : 'ending…';
  }
}

function setFaults(next) {
  faults = [...(next || [])].sort((a, b) => a.expires_at_ms - b.expires_at_ms);
  drawList();
  for (const handler of listeners) handler(faults);
}

async function refresh() {
  try {
    const response = await fetch('/api/chaos', { credentials: 'same-origin', headers: { accept: 'application/json' } });
    if (!response.ok) {
      document.getElementById('fault-result').textContent = `The chaos state is not available: HTTP ${response.status}`;
      return;
    }
    const state = await response.json();
    const first = (state.faults || [])[0];
    if (first) skewMs = first.expires_at_ms - first.expires_in_ms - Date.now();
    showTargets(state.targets || []);
    showLimits(state.limits);
    layers.showOffer(state);
    showNotHere();
    syncLayer();
    setFaults(state.faults);
  } catch (error) {
    document.getElementById('fault-result').textContent = `The chaos state is not available: ${error}`;
  }
}

function showTargets(targets) {
  const select = document.getElementById('fault-target');
  const chosen = select.value;
  fill(select, targets.map((t) => el('option', { value: t, selected: t === chosen || (!chosen && t === 'catalog') }, t)));
}

function showLimits(limits) {
  if (!limits) return;
  document.getElementById('limits').textContent =
    'HTTP faults act on every replica of a service, TCP faults on a connection (one edge or every edge of a target), ' +
    `process faults on one instance. A visitor's fault lasts at most ${limits.max_duration_s} s, ` +
    `${limits.max_visitor_faults ?? limits.max_active} at once across the layers; HTTP latency up to ${limits.max_latency_ms} ms. Each ends by itself.`;
  const form = document.getElementById('fault-form');
  form.elements.duration_s.max = limits.max_duration_s;
  form.elements.latency_ms.max = limits.max_latency_ms;
}

function showNotHere() {
  fill(document.getElementById('not-here'), layers.notAvailable().map(({ reason, names }, i) => {
    const id = `nh-${i}`;
    return el('li', {},
      el('p', { class: 'muted', id }, reason),
      el('div', { class: 'nh-buttons' }, names.map((what) =>
        el('button', { type: 'button', disabled: true, 'aria-describedby': id }, what))));
  }));
}

/** Shows the controls of the chosen layer only. */
function syncLayer() {
  const form = document.getElementById('fault-form');
  const layer = form.elements.layer.value;
  for (const node of form.querySelectorAll('[data-layer]')) {
    const used = node.dataset.layer === layer;
    node.hidden = !used;
    for (const input of node.querySelectorAll('input, select')) input.disabled = !used;
  }
  if (layer === 'http') syncKind();
  layers.syncTcpKind(form);
  form.elements.duration_s.disabled = false;
}

function syncKind() {
  const form = document.getElementById('fault-form');
  const kind = form.elements.kind.value;
  const http = form.elements.layer.value === 'http';
  for (const label of form.querySelectorAll('[data-for]')) {
    const used = http && (kind === 'both' || kind === label.dataset.for);
    label.hidden = !used;
    for (const input of label.querySelectorAll('input')) input.disabled = !used;
  }
}

async function inject(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const f = form.elements;
  const kind = f.kind.value;
  let body;
  if (f.layer.value === 'http') {
    body = { target: f.target.value, duration_s: Number(f.duration_s.value), trips_breaker: f.trips_breaker.checked };
    if (kind !== 'latency') {
      body.status = Number(f.status.value);
      body.probability = Number(f.probability.value) / 100;
    }
    if (kind !== 'status') body.latency_ms = Number(f.latency_ms.value);
  } else {
    body = layers.body(form);
  }
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  const result = await postJson('/api/chaos/faults', body);
  button.disabled = false;
  const out = document.getElementById('fault-result');
  if (result.ok) {
    out.textContent = `Injected on ${result.body.target}: ${describe(result.body)}.`;
    skewMs = result.body.expires_at_ms - result.body.expires_in_ms - Date.now();
    setFaults([...faults.filter((r) => r.id !== result.body.id), result.body]);
  } else {
    out.textContent = `Refused: ${problemText(result)}`;
  }
}

async function remove(record, button) {
  button.disabled = true;
  let status = 0;
  try {
    const response = await fetch(`/api/chaos/faults/${encodeURIComponent(record.id)}`, { method: 'DELETE', credentials: 'same-origin' });
    status = response.status;
  } catch {
    status = 0;
  }
  const out = document.getElementById('fault-result');
  if (status === 204 || status === 404) {
    out.textContent = status === 204 ? `Stopped the fault on ${record.target}.` : `The fault on ${record.target} had already ended.`;
    setFaults(faults.filter((r) => r.id !== record.id));
  } else {
    button.disabled = false;
    out.textContent = `Could not stop the fault on ${record.target} (${status || 'no answer'}).`;
  }
}

/** Wires the controls, loads the state and follows the `chaos` events. */
export function start() {
  const form = document.getElementById('fault-form');
  form.addEventListener('submit', inject);
  form.elements.kind.addEventListener('change', syncKind);
  form.elements.layer.addEventListener('change', syncLayer);
  form.elements.tcp_kind.addEventListener('change', () => layers.syncTcpKind(form));
  form.elements.process.addEventListener('change', layers.syncAction);
  syncLayer();
  on('chaos', (event) => {
    const data = event.data || {};
    if (Array.isArray(data.faults)) setFaults(data.faults);
  });
  setInterval(tick, TICK_MS);
  refresh();
}
