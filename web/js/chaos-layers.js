// The /chaos form's TCP and process layers (relayed by the BFF to the apphost `lab up` runs):
// the targets and edges a TCP fault can name, the TCP kinds with their parameters, every process
// with the actions the visitor may not take disabled and the reason shown (never hidden), and the
// request body each layer sends. Without an apphost both layers are disabled with the BFF's reason.

import { el, fill } from './dom.js';

/** What the page last learnt of the apphost (`GET /api/chaos` → `apphost`), or null. */
let offer = null;
/** Why TCP and process faults are not available, when they are not. */
let unavailable = null;

const ACTIONS = { pause: 'pause', kill: 'kill -9', restart: 'graceful restart' };
const TCP_NAMES = {
  latency: 'latency + jitter', bandwidth: 'bandwidth limit', reset: 'connection reset',
  blackhole: 'blackhole', refuse: 'refuse connections', slow_close: 'slow close', cut_after: 'cut after N bytes',
};

/** Takes the new `GET /api/chaos` state: fills the selects and the refusals. */
export function showOffer(state) {
  offer = state.apphost || null;
  unavailable = offer ? null : (state.not_here_reason || 'TCP and process faults need the apphost (`lab up`).');
  const layer = document.getElementById('fault-layer');
  for (const option of layer.options) {
    if (option.value === 'http') continue;
    option.disabled = !offer;
    option.title = offer ? '' : unavailable;
  }
  if (!offer && layer.value !== 'http') layer.value = 'http';
  const where = document.getElementById('fault-where');
  const chosenWhere = where.value;
  fill(where, offer ? [
    el('optgroup', { label: 'Targets (every edge of it)' }, offer.tcp_targets.map((t) =>
      el('option', { value: `target:${t}`, selected: `target:${t}` === chosenWhere }, t))),
    el('optgroup', { label: 'One edge' }, offer.edges.map((e) =>
      el('option', { value: `edge:${e.name}`, selected: `edge:${e.name}` === chosenWhere }, e.name))),
  ] : [el('option', { value: '' }, 'no apphost')]);
  const process = document.getElementById('fault-process');
  const chosen = process.value;
  fill(process, offer ? offer.processes.map((p) =>
    el('option', { value: p.name, selected: p.name === chosen }, `${p.name} (${p.state})`)) : [el('option', { value: '' }, 'no apphost')]);
  syncAction();
}

/** The refusal map of the chosen process: action → reason or null. */
function refusals() {
  const name = document.getElementById('fault-process').value;
  const row = offer && offer.processes.find((p) => p.name === name);
  return (row && row.refused) || {};
}

/** Disables the actions the visitor may not take on the chosen process, saying why. */
export function syncAction() {
  const refused = refusals();
  const action = document.getElementById('fault-action');
  for (const option of action.options) {
    const why = refused[option.value];
    option.disabled = Boolean(why);
    option.title = why || '';
  }
  if (action.selectedOptions[0]?.disabled) {
    const allowed = [...action.options].find((o) => !o.disabled);
    if (allowed) action.value = allowed.value;
  }
  const reasons = Object.entries(refused).filter(([, why]) => why).map(([a, why]) => `${ACTIONS[a] || a}: ${why}`);
  document.getElementById('fault-refusal').textContent = reasons.length ? `Not for you here — ${reasons.join('; ')}.` : '';
}

/** The disabled entries of the "not available to you" list: grouped, each with its reason. */
export function notAvailable() {
  if (!offer) {
    return [{ reason: unavailable, names: [...Object.values(ACTIONS), ...Object.values(TCP_NAMES).map((n) => `TCP ${n}`)] }];
  }
  const byReason = new Map();
  for (const p of offer.processes) {
    for (const [action, why] of Object.entries(p.refused || {})) {
      if (!why) continue;
      if (!byReason.has(why)) byReason.set(why, []);
      byReason.get(why).push(`${ACTIONS[action] || action} ${p.name}`);
    }
  }
  return [...byReason.entries()].map(([reason, names]) => ({ reason, names }));
}

/** Shows only the TCP parameters the chosen kind uses. */
export function syncTcpKind(form) {
  const kind = form.elements.tcp_kind.value;
  for (const label of form.querySelectorAll('[data-tcp]')) {
    const used = label.dataset.tcp.split(' ').includes(kind) && form.elements.layer.value === 'tcp';
    label.hidden = !used;
    for (const input of label.querySelectorAll('input, select')) input.disabled = !used;
  }
}

/** The TCP fault the form describes. */
function tcpFault(f) {
  const kind = f.tcp_kind.value;
  const direction = f.direction.value;
  switch (kind) {
    case 'latency': return { kind, ms: Number(f.tcp_ms.value), jitter_ms: Number(f.jitter_ms.value), direction };
    case 'bandwidth': return { kind, bytes_per_s: Number(f.bytes_per_s.value), direction };
    case 'reset': return { kind, probability: Number(f.reset_probability.value) / 100 };
    case 'blackhole': return { kind, direction };
    case 'slow_close': return { kind, delay_ms: Number(f.delay_ms.value) };
    case 'cut_after': return { kind, bytes: Number(f.cut_bytes.value), direction };
    default: return { kind };
  }
}

/** The request body for a TCP or process fault. */
export function body(form) {
  const f = form.elements;
  const duration_s = Number(f.duration_s.value);
  if (f.layer.value === 'tcp') {
    const [type, ...rest] = f.where.value.split(':');
    const name = rest.join(':');
    const scope = type === 'edge' ? { edge: name } : { target: name };
    return { layer: 'tcp', ...scope, fault: tcpFault(f), duration_s };
  }
  return { layer: 'process', target: f.process.value, action: f.action.value, duration_s };
}

/** One line for a TCP or process fault in the active list. */
export function describe(record) {
  const fault = record.fault || {};
  if (record.layer === 'process') {
    const parts = [ACTIONS[fault.kind] || fault.kind, record.status];
    if (record.restart_ms != null) parts.push(`back in ${record.restart_ms} ms`);
    if (record.detail) parts.push(record.detail);
    return parts.filter(Boolean).join(', ');
  }
  const params = Object.entries(fault).filter(([k]) => k !== 'kind').map(([k, v]) => `${k} ${v}`);
  const where = record.scope && record.scope.type === 'edge' ? ` on edge ${record.scope.name}` : '';
  return `TCP ${TCP_NAMES[fault.kind] || fault.kind}${params.length ? ` (${params.join(', ')})` : ''}${where}`;
}
