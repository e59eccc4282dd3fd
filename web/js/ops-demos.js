// The "Drive it" panels of issue 8 (idempotency through the edge, the transactional outbox, a
// vault credential rotation, and the saga's payment expiry): each runs its demo through
// `POST /api/demo/{name}` with demos.js's runner and draws its own evidence before the verdict.

import { el, fill, ms } from './dom.js';
import { run } from './demos.js';

function chip(text, cls, title) {
  return el('li', { class: `chip ${cls}`, title }, text);
}

function numbers(form) {
  const values = {};
  for (const input of form.querySelectorAll('input[type=number]')) values[input.name] = Number(input.value);
  return values;
}

// ---- idempotency: every attempt, who answered it and with which order ----
function drawIdempotency(report) {
  const e = report.evidence || {};
  const list = document.getElementById('idem-results');
  list.replaceChildren();
  const attempts = [...(e.attempts || []), ...(e.other_body ? [e.other_body] : [])];
  for (const a of attempts) {
    const what = a.status === 202 ? (a.replayed ? 'replayed' : 'placed')
      : a.status === 409 ? 'in flight' : a.status === 422 ? 'other body' : 'error';
    const cls = a.status === 202 ? (a.replayed ? 'warn' : 'ok') : a.status === 409 || a.status === 422 ? 'open' : 'bad';
    list.append(chip(`${a.status} ${what} · ${ms(a.ms)}`, cls,
      `${a.phase}${a.order_id ? ` · order ${a.order_id}` : ''}`));
  }
  const ids = e.order_ids || [];
  fill(document.getElementById('idem-orders'),
    `Orders named by the answers: ${ids.length ? ids.join(', ') : 'none'}; orders itself names ${e.orders_says || 'none'} for the key.`);
}

// ---- outbox: the backlog while paused and after the resume ----
function drawOutbox(report) {
  const e = report.evidence || {};
  const paused = e.outbox_while_paused || {};
  const after = e.outbox_after || {};
  const list = document.getElementById('outbox-backlog');
  fill(list,
    chip(`paused: ${paused.pending ?? '?'} waiting`, 'warn', `oldest ${ms(paused.oldest_pending_age_ms)}`),
    chip(`resumed: ${after.pending ?? '?'} waiting`, after.pending === 0 ? 'ok' : 'bad', 'after the relay resumed'),
    chip(`order ${(e.order || {}).status || '?'}`, (e.order || {}).status === 'Completed' ? 'ok' : 'warn',
      (e.order || {}).order_id || ''));
}

// ---- vault rotation: leases before and after, requests through it, rotation stages ----
function drawVault(report) {
  const e = report.evidence || {};
  const r = e.requests || {};
  const stages = ((e.rotation || {}).stages || []).map((s) => `${s.stage} ${ms(s.after_ms)}`);
  fill(document.getElementById('vault-facts'),
    el('table', {},
      el('caption', {}, `Rotation took ${ms(e.rotation_ms)}`),
      el('tbody', {},
        el('tr', {}, el('th', { scope: 'row' }, 'lease before'), el('td', {}, String(e.old_lease ?? '—'))),
        el('tr', {}, el('th', { scope: 'row' }, 'lease after'), el('td', {}, String(e.new_lease ?? '—'))),
        el('tr', {}, el('th', { scope: 'row' }, 'requests sent'), el('td', {}, `${r.sent ?? '?'} (${r.during_rotation ?? '?'} during the rotation)`)),
        el('tr', {}, el('th', { scope: 'row' }, 'requests failed'), el('td', {}, String(r.failed ?? '?'))))),
    stages.length ? el('p', { class: 'muted' }, `Stages: ${stages.join(' → ')}`) : null);
}

/** Wires the panels of this module. */
export function start() {
  const on = (name, handler) => {
    const form = document.querySelector(`form[data-form="${name}"]`);
    if (!form) return;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      handler(form, form.closest('.drive'));
    });
  };
  on('idempotency', (form, panel) => run(panel, '/api/demo/idempotency', numbers(form), drawIdempotency));
  on('outbox', (form, panel) => run(panel, '/api/demo/outbox', numbers(form), drawOutbox));
  on('vault-rotation', (form, panel) => run(panel, '/api/demo/vault-rotation', numbers(form), drawVault));
}
