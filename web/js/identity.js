// The identity card's "Drive it": a throwaway account with a generated name registers, signs in,
// reads `GET /api/auth/me` with its access token, logs out, and presents the same token once more
// to see it refused; then, on demand, the server-side JTI-revocation demo times catalog's and
// orders' refusal of a logged-out token. The token lives in this module's memory for the length
// of one run and is never put on the page: only its claims' safe parts are (sub, roles, exp and
// the first characters of the jti).

import { callJson, el, fill, ms, postJson, problemText } from './dom.js';
import { showProblem, showReport } from './demos.js';

/** Characters of the jti shown: enough to tell two tokens apart, too few to be the id. */
const JTI_PREFIX = 8;

/** Random lowercase letters and digits, from the browser's CSPRNG. */
function randomText(length) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return [...bytes].map((b) => alphabet[b % alphabet.length]).join('');
}

/**
 * The payload of a JWT, decoded (not verified: the services verify it; the page only reads what
 * it says about itself). Null when it is not a JWT.
 */
export function claimsOf(token) {
  const part = String(token || '').split('.')[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** The claims a visitor may see: no signature, no full id, nothing to replay. */
export function safeClaims(claims) {
  const roles = Array.isArray(claims.roles) ? claims.roles : [];
  const exp = typeof claims.exp === 'number' ? new Date(claims.exp * 1000) : null;
  return {
    sub: String(claims.sub || '—'),
    roles: roles.length ? roles.join(', ') : 'none',
    exp: exp ? `${exp.toLocaleTimeString()} (in ${Math.round((exp - Date.now()) / 1000)} s)` : '—',
    jti: claims.jti ? `${String(claims.jti).slice(0, JTI_PREFIX)}…` : '—',
  };
}

function showClaims(claims) {
  const safe = safeClaims(claims);
  const rows = Object.entries(safe).map(([name, value]) => [
    el('dt', {}, name), el('dd', { 'data-claim': name }, value)]);
  fill(document.getElementById('id-claims'), rows.flat());
}

/** One call of the run as a chip: what, its status, how long. */
function record(list, label, answer, started, good) {
  const cls = good ? 'ok' : answer.status === 401 ? 'warn' : 'bad';
  list.append(el('li', { class: `chip ${cls}`, 'data-call': label, 'data-status': answer.status },
    `${label} → ${answer.status || 'no answer'} · ${ms(performance.now() - started)}`));
}

/** Runs the whole sign-in → me → logout → refused round; answers the report it shows. */
async function signInRound(panel) {
  const list = document.getElementById('id-steps');
  list.replaceChildren();
  fill(document.getElementById('id-claims'));
  const email = `visitor-${randomText(10)}@lab.invalid`;
  const credentials = { email, password: randomText(24) };
  const steps = [];
  const begun = performance.now();
  const stepAt = (name) => steps.push({ at_ms: performance.now() - begun, name });
  const call = async (label, expect, method, path, options) => {
    const started = performance.now();
    const answer = await callJson(method, path, options);
    record(list, label, answer, started, answer.status === expect);
    return answer;
  };

  const registered = await call('register', 201, 'POST', '/api/auth/register', { body: credentials });
  if (registered.status !== 201) return showProblem(panel, registered);
  stepAt(`registered ${email}`);
  const login = await call('login', 200, 'POST', '/api/auth/login', { body: credentials });
  if (!login.ok || !login.body) return showProblem(panel, login);
  // Only in this function's scope, and gone when it returns.
  let token = login.body.access_token;
  const claims = claimsOf(token);
  if (!claims) return showProblem(panel, { status: login.status, body: { title: 'the access token is not a JWT' } });
  showClaims(claims);
  stepAt('signed in: an access token (kept in memory, never shown) and a refresh token');
  const bearer = () => ({ authorization: `Bearer ${token}` });

  const me = await call('me', 200, 'GET', '/api/auth/me', { headers: bearer() });
  if (!me.ok || !me.body) return showProblem(panel, me);
  fill(document.getElementById('id-me'),
    el('dt', {}, 'id'), el('dd', { 'data-me': 'id' }, String(me.body.id)),
    el('dt', {}, 'email'), el('dd', { 'data-me': 'email' }, String(me.body.email)),
    el('dt', {}, 'roles'), el('dd', { 'data-me': 'roles' }, (me.body.roles || []).join(', ') || 'none'));
  stepAt('GET /api/auth/me answered the account the token names');

  const logout = await call('logout', 204, 'POST', '/api/auth/logout', { headers: bearer() });
  if (logout.status !== 204) return showProblem(panel, logout);
  stepAt('logged out: identity revoked the token\'s jti');
  const after = await call('me again', 401, 'GET', '/api/auth/me', { headers: bearer() });
  token = null;
  stepAt(`the same token presented again: ${after.status === 401 ? 'refused (401)' : `answered ${after.status}`}`);

  const held = me.body.id === claims.sub && after.status === 401;
  const report = {
    verdict: held ? 'pass' : 'fail',
    summary: held
      ? 'signed in, read /me as the token\'s subject, logged out, and the old token was refused'
      : `the round did not hold: /me named ${me.body.id} for sub ${claims.sub}; after logout it answered ${problemText(after)}`,
    elapsed_ms: performance.now() - begun,
    steps,
    evidence: { claims: safeClaims(claims), me: me.body, after_logout: { status: after.status, problem: after.body } },
  };
  showReport(panel, report);
  return report;
}

function busy(panel, on) {
  panel.setAttribute('aria-busy', on ? 'true' : 'false');
  for (const button of panel.querySelectorAll('button')) button.disabled = on;
  if (on) fill(panel.querySelector('.result'), el('p', { class: 'muted' }, 'running…'));
}

/** The server-side demo: how soon catalog and orders refuse a logged-out token. */
async function revocation(panel) {
  const answer = await postJson('/api/demo/jti-revocation', {});
  if (!answer.ok || !answer.body) return showProblem(panel, answer);
  return showReport(panel, answer.body);
}

/** Wires the identity panel. */
export function start() {
  const panel = document.getElementById('drive-identity');
  if (!panel) return;
  const form = panel.querySelector('form[data-form="identity"]');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    busy(panel, true);
    try {
      await signInRound(panel);
    } finally {
      busy(panel, false);
    }
  });
  panel.querySelector('[data-action="jti-revocation"]').addEventListener('click', async () => {
    busy(panel, true);
    try {
      await revocation(panel);
    } finally {
      busy(panel, false);
    }
  });
}
