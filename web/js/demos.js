// The "Drive it" panels: each runs its demo through `POST /api/demo/{name}` and shows the
// evidence (attempts, replicas, statuses, timings) and the verdict the server judged. A refusal
// (429 with Retry-After, 422, 503) is shown as what it is, never as a pass.

import { el, fill, ms, postJson, problemText } from './dom.js';
import { instanceName } from './cluster.js';
import { on as onLive } from './live.js';

/** Up to this many steps are shown open; longer runs fold them away behind a summary. */
const OPEN_STEPS = 8;
/** How long each request of a burst takes on screen, so the bucket visibly drains (ms). */
const DRAIN_STEP_MS = 80;

/** The verdict, summary and steps of a report, and its raw evidence to expand. */
export function showReport(panel, report) {
  const result = panel.querySelector('.result');
  const verdict = report.verdict || 'fail';
  const steps = Array.isArray(report.steps) && report.steps.length
    ? el('ol', { class: 'steps', 'aria-label': 'Steps' }, report.steps.map((s) =>
      el('li', {}, el('span', { class: 'at' }, ms(s.at_ms)), ' ', s.name,
        s.instance ? el('span', { class: 'inst' }, ` @ ${s.instance}`) : null)))
    : null;
  const folded = steps && report.steps.length > OPEN_STEPS
    ? el('details', { class: 'steps-box' }, el('summary', {}, `Steps (${report.steps.length})`), steps)
    : steps;
  fill(result,
    el('p', { class: 'verdict-line' },
      el('span', { class: `verdict ${verdict}`, 'data-verdict': verdict }, verdict),
      ' ', report.summary || report.explanation || '',
      el('span', { class: 'muted' }, report.elapsed_ms !== undefined ? ` (${ms(report.elapsed_ms)})` : '')),
    folded,
    el('details', { class: 'evidence' }, el('summary', {}, 'Evidence (raw)'),
      el('pre', {}, JSON.stringify(report.evidence !== undefined ? report.evidence : report, null, 2))));
}

/** A refused or failed call, with a Retry-After countdown when there is one. */
export function showProblem(panel, answer) {
  const result = panel.querySelector('.result');
  const line = el('p', { class: 'verdict-line' },
    el('span', { class: 'verdict refused', 'data-verdict': 'refused' }, answer.status === 429 ? '429' : 'error'),
    ' ', problemText(answer));
  fill(result, line);
  if (answer.retryAfter) countdown(line, answer.retryAfter, 'try again in');
}

function countdown(node, seconds, words) {
  const out = el('span', { class: 'countdown' });
  node.append(' ', out);
  let left = seconds;
  const tick = () => {
    out.textContent = left > 0 ? `${words} ${left} s` : 'ready again';
    if (left-- > 0) setTimeout(tick, 1000);
  };
  tick();
}

function busy(panel, on) {
  panel.setAttribute('aria-busy', on ? 'true' : 'false');
  for (const button of panel.querySelectorAll('button')) button.disabled = on;
  if (on) fill(panel.querySelector('.result'), el('p', { class: 'muted' }, 'running…'));
}

/** Runs `path` with `body` in `panel`, then `draw(report)` before the verdict is shown. */
export async function run(panel, path, body, draw) {
  busy(panel, true);
  const answer = await postJson(path, body);
  busy(panel, false);
  if (!answer.ok || !answer.body) {
    showProblem(panel, answer);
    return null;
  }
  if (draw) await draw(answer.body);
  showReport(panel, answer.body);
  return answer.body;
}

function numbers(form) {
  const values = {};
  for (const input of form.querySelectorAll('input[type=number]')) values[input.name] = Number(input.value);
  return values;
}

function chip(text, cls, title) {
  return el('li', { class: `chip ${cls}`, title }, text);
}

const sleep = (t) => new Promise((resolve) => setTimeout(resolve, t));

// ---- rate limit: the bucket drains request by request, then refills with a countdown ----
async function drawBucket(report) {
  const fillBar = document.getElementById('bucket-fill');
  const label = document.getElementById('bucket-label');
  const list = document.getElementById('rl-results');
  const countdownLine = document.getElementById('rl-countdown');
  list.replaceChildren();
  countdownLine.textContent = '';
  const capacity = report.capacity || 1;
  let tokens = capacity;
  let retryAfter = 0;
  for (const r of report.results || []) {
    tokens = typeof r.tokens === 'number' ? r.tokens : tokens;
    fillBar.style.width = `${Math.max(0, Math.min(1, tokens / capacity)) * 100}%`;
    label.textContent = `Bucket: ${tokens.toFixed(2)} of ${capacity} tokens`;
    list.append(chip(`#${r.n} ${r.allowed ? '200' : '429'}`, r.allowed ? 'ok' : 'bad',
      r.allowed ? `allowed, ${r.remaining} left` : `refused, Retry-After ${r.retry_after_s} s`));
    if (!r.allowed && r.retry_after_s) retryAfter = r.retry_after_s;
    await sleep(DRAIN_STEP_MS);
  }
  if (retryAfter > 0) refill(report, tokens, retryAfter);
}

function refill(report, startTokens, retryAfter) {
  const fillBar = document.getElementById('bucket-fill');
  const label = document.getElementById('bucket-label');
  const line = document.getElementById('rl-countdown');
  const started = performance.now();
  let lastSecond = -1;
  const frame = () => {
    const elapsed = (performance.now() - started) / 1000;
    const tokens = Math.min(report.capacity, startTokens + elapsed * report.refill_per_s);
    fillBar.style.width = `${(tokens / report.capacity) * 100}%`;
    label.textContent = `Bucket: ${tokens.toFixed(2)} of ${report.capacity} tokens (refilling ${report.refill_per_s}/s)`;
    const left = Math.max(0, Math.ceil(retryAfter - elapsed));
    if (left !== lastSecond) {
      lastSecond = left;
      line.textContent = left > 0 ? `Retry-After: ${left} s until the next token` : 'A token is back: the next request would pass.';
    }
    if (tokens < report.capacity) requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

// ---- circuit breaker: each request, then the state machine as the breakers ended ----
function drawBreaker(report) {
  const list = document.getElementById('cb-results');
  list.replaceChildren();
  const evidence = report.evidence || {};
  let opened = false;
  for (const [i, r] of (evidence.requests || []).entries()) {
    const cls = r.circuit_open ? 'open' : r.status === 200 ? 'ok' : 'bad';
    if (r.circuit_open) opened = true;
    list.append(chip(`#${i + 1} ${r.circuit_open ? 'fail-fast' : r.status} · ${ms(r.ms)}`, cls,
      `${r.replica || 'no replica'}${r.error ? `: ${r.error}` : ''}`));
  }
  const states = new Set((evidence.breakers || []).map((b) => b.state));
  if (opened) states.add('open');
  if (!states.size) states.add('closed');
  for (const state of states) passed.add(state);
  markStates(passed);
}

/** States the catalog's breakers passed through since the panel last ran (live events). */
const passed = new Set();

function onBreakerEvent(event) {
  const change = event.data || {};
  if (change.kind !== 'breaker_changed' || change.service !== 'catalog') return;
  passed.add(change.from);
  passed.add(change.to);
  const list = document.getElementById('cb-transitions');
  list.append(el('li', {}, `${instanceName(change.endpoint)}: ${change.from} → ${change.to} (${change.reason})`));
  while (list.children.length > 6) list.firstChild.remove();
  markStates(passed);
}

function markStates(states) {
  for (const item of document.querySelectorAll('#drive-breaker .states li')) {
    item.classList.toggle('on', states.has(item.dataset.state));
  }
}

// ---- cache: both replicas before and after, and the measured stale window ----
function drawCache(report) {
  const e = report.evidence || {};
  const row = (s, when) => el('tr', {},
    el('td', {}, s.instance === e.writer ? `${s.instance} (writer)` : s.instance === e.reader ? `${s.instance} (reader)` : s.instance),
    el('td', {}, when),
    el('td', {}, s.l1_version ?? '—'), el('td', {}, s.l2_version ?? '—'),
    el('td', {}, s.subscribed ? 'yes' : 'no'));
  fill(document.getElementById('cache-replicas'),
    el('table', {},
      el('caption', {}, `New version ${e.new_version ?? '?'}; the reader served the old one for ${ms(e.stale_window_ms)}`),
      el('thead', {}, el('tr', {}, ['replica', 'when', 'L1', 'L2 (Redis)', 'pub/sub'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, (e.before || []).map((s) => row(s, 'before')), (e.after || []).map((s) => row(s, 'after')))),
    (e.reads || []).length ? el('p', { class: 'muted' }, `Reader's reads until converged: ${e.reads.join(' → ')}`) : null);
}

// ---- race: one winner, N−1 412s ----
function drawRace(report) {
  const e = report.evidence || {};
  const list = document.getElementById('race-results');
  list.replaceChildren();
  for (const a of e.attempts || []) {
    const replica = String(a.replica || '').replace(/^catalog-/, 'c');
    list.append(chip(`${a.status} · ${replica}`, a.status < 300 ? 'ok' : a.status === 412 ? 'warn' : 'bad',
      `${a.replica} · ${ms(a.latency_ms)}`));
  }
  list.setAttribute('aria-label', `Race attempts: ${e.winners ?? '?'} won, ${e.precondition_failed ?? '?'} got 412`);
}

/** Wires every panel's form. */
export function start() {
  const on = (name, handler) => {
    const form = document.querySelector(`form[data-form="${name}"]`);
    if (!form) return;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      handler(form, form.closest('.drive'));
    });
  };
  on('rate-limit', (form, panel) => run(panel, '/api/demo/rate-limit', numbers(form), drawBucket));
  onLive('breaker', onBreakerEvent);
  on('circuit-breaker', (form, panel) => {
    passed.clear();
    document.getElementById('cb-transitions').replaceChildren();
    const failing = form.querySelector('input[name=upstream_failing]').checked;
    run(panel, '/api/demo/circuit-breaker',
      { requests: numbers(form).requests, upstream_failing: failing, reset: !failing }, drawBreaker);
  });
  document.querySelector('#drive-breaker [data-action=reset]')?.addEventListener('click', () => {
    const panel = document.getElementById('drive-breaker');
    passed.clear();
    run(panel, '/api/demo/circuit-breaker', { requests: 1, upstream_failing: false, reset: true }, drawBreaker);
  });
  on('cache', (form, panel) => run(panel, '/api/demo/cache', {}, drawCache));
  on('last-unit', (form, panel) => run(panel, '/api/demo/last-unit', numbers(form)));
  on('race', (form, panel) => run(panel, '/api/demo/race', numbers(form), drawRace));
  on('payment-declined', (form, panel) => run(panel, '/api/demo/saga', { scenario: 'payment-declined' }));
}
