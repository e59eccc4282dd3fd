// The message-flow section: the place-order saga's states, lit from the real `saga` and
// `message` events of the sagas this visitor starts. The visitor's order ids arrive on their
// own stream (the demo's "placed the order" steps); events of other orders (other visitors,
// background journeys) are ignored, and events that arrive before their order id is known are
// kept and replayed once it is.

import { el, fill, postJson } from './dom.js';
import { on } from './live.js';
import { showProblem, showReport } from './demos.js';

/** Events kept while waiting for an order id, per order (bounded: the stream is public). */
const PENDING_LIMIT = 200;

/** Events of a saga may reach the stream after the demo's answer: keep collecting this long. */
const LATE_EVENTS_MS = 5_000;

const mine = new Set();
let pending = [];
let running = false;
/** While true, unknown orders' events are kept and new order ids are learnt. */
let collecting = false;
let collectTimer = null;

/** The end of an id: UUIDv7s of one moment share their first half. */
function short(id) {
  return String(id).slice(-8);
}

function reset() {
  mine.clear();
  pending = [];
  for (const li of document.querySelectorAll('#saga li, #saga-fail li')) li.className = li.classList.contains('final') ? 'final' : '';
  document.getElementById('messages').replaceChildren();
  fill(document.getElementById('history-list'), el('li', {}, 'Waiting for the saga…'));
  document.getElementById('saga-fail').classList.remove('fired');
  document.getElementById('compensations').replaceChildren();
}

function status(text) {
  document.getElementById('flow-status').textContent = text;
}

function light(state, how) {
  const li = document.querySelector(`#saga li[data-state="${state}"], #saga-fail li[data-state="${state}"]`);
  if (!li) return;
  li.classList.add('reached', how);
  li.classList.remove('current');
  // The newest state is the current one.
  for (const other of document.querySelectorAll('#saga li.current, #saga-fail li.current')) other.classList.remove('current');
  li.classList.add('current');
}

function onSaga(step) {
  light(step.to, 'live');
  const compensating = (step.compensations || []).length ? ` — compensating: ${step.compensations.join(', ')}` : '';
  status(`order ${short(step.order_id)}: ${step.from || '∅'} → ${step.to} on ${step.event}${compensating}`);
  if ((step.compensations || []).length) document.getElementById('saga-fail').classList.add('fired');
  for (const command of step.compensations || []) {
    document.getElementById('compensations').append(el('li', { class: 'chip bad' }, `${command} (order ${short(step.order_id)})`));
  }
  const list = document.getElementById('messages');
  list.append(el('li', { class: compensating ? 'comp' : '' },
    `${short(step.order_id)} · ${step.from || '∅'} → ${step.to} (${step.event})${compensating}`));
}

function onMessage(message) {
  const list = document.getElementById('messages');
  list.append(el('li', { class: 'msg' },
    `${short(message.correlation_id)} · ${message.from} → ${(message.to || []).join(', ') || 'nobody'}: ${message.message_type}`));
}

function handle(kind, data) {
  const order = kind === 'saga' ? data.order_id : data.correlation_id;
  if (mine.has(order)) {
    if (kind === 'saga') onSaga(data);
    else onMessage(data);
  } else if (collecting && pending.length < PENDING_LIMIT) {
    pending.push([kind, data]);
  }
}

function learn(orderId) {
  // Only sagas started from this section draw here (the cards' saga demos have their own panels).
  if (!collecting || !orderId || mine.has(orderId)) return;
  mine.add(orderId);
  const replay = pending;
  pending = [];
  for (const [kind, data] of replay) handle(kind, data);
}

function orders(evidence) {
  if (!evidence) return [];
  if (Array.isArray(evidence.orders)) return evidence.orders;
  return evidence.order ? [evidence.order] : [];
}

function showHistory(report) {
  const all = orders(report.evidence);
  const list = document.getElementById('history-list');
  if (!all.length) {
    fill(list, el('li', {}, 'The demo recorded no order history.'));
    return;
  }
  fill(list, all.flatMap((order) => [
    el('li', { class: 'order' }, `order ${short(order.id || order.order_id || '?')}: ${order.status || '?'}`),
    ...(order.history || []).map((t) => el('li', {}, `${t.from || '∅'} → ${t.to}${t.event ? ` on ${t.event}` : ''}${t.at ? ` at ${t.at}` : ''}`)),
  ]));
  for (const order of all) {
    for (const t of order.history || []) light(t.to, 'record');
  }
}

async function startSaga(scenario) {
  if (running) return;
  reset();
  running = true;
  collecting = true;
  clearTimeout(collectTimer);
  const panel = document.getElementById('flow');
  for (const b of document.querySelectorAll('#saga-form button[data-scenario]')) b.disabled = true;
  status(`starting a ${scenario} saga…`);
  fill(document.getElementById('flow-result'), el('p', { class: 'muted' }, 'running…'));
  const answer = await postJson('/api/demo/saga', { scenario });
  running = false;
  for (const order of orders(answer.body && answer.body.evidence)) learn(order.id || order.order_id);
  collectTimer = setTimeout(() => {
    collecting = false;
    pending = [];
  }, LATE_EVENTS_MS);
  for (const b of document.querySelectorAll('#saga-form button[data-scenario]')) b.disabled = false;
  const result = { querySelector: () => document.getElementById('flow-result') };
  if (!answer.ok || !answer.body) {
    showProblem(result, answer);
    status('The saga did not run.');
    return;
  }
  showHistory(answer.body);
  showReport(result, answer.body);
  const finals = orders(answer.body.evidence).map((o) => o.status).filter(Boolean);
  if (finals.length) status(`Finished: ${finals.join(', ')}.`);
  panel.dataset.done = scenario;
}

/** Wires the saga buttons and the live events. */
export function start() {
  on('demo', (event) => {
    const step = event.data && event.data.step;
    if (!event.data || event.data.demo !== 'saga' || !step || !step.detail) return;
    // One order (`order_id`) or several at once (`orders`, `order_ids`: the last-unit race).
    const detail = step.detail;
    for (const id of [detail.order_id, ...(detail.orders || []), ...(detail.order_ids || [])]) {
      if (typeof id === 'string') learn(id);
    }
  });
  on('saga', (event) => handle('saga', event.data));
  on('message', (event) => handle('message', event.data));
  document.getElementById('saga-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const button = event.submitter;
    if (button && button.dataset.scenario) startSaga(button.dataset.scenario);
  });
}
