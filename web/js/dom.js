// Small DOM helpers shared by the page's modules: building elements without innerHTML (so
// nothing a server or visitor sends is ever parsed as markup) and calling the API.

/** An element with attributes and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replaces every child of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
  }
}

/** Milliseconds, rounded for reading. */
export function ms(value) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '—';
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
}

/**
 * POSTs JSON to the BFF and answers `{ ok, status, body, retryAfter }`; a problem+json answer
 * (429, 422, 503…) is returned, not thrown, so each panel can show it honestly.
 */
export function postJson(path, body, headers = {}) {
  return callJson('POST', path, { body, headers });
}

/** Any method, as `postJson`; a `body` is sent as JSON, `headers` are added (a bearer token). */
export async function callJson(method, path, { body, headers = {} } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch (error) {
    return { ok: false, status: 0, body: { title: 'network error', detail: String(error) } };
  }
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  const retryAfter = Number(response.headers.get('retry-after')) || null;
  return { ok: response.ok, status: response.status, body: parsed, retryAfter };
}

/** A problem+json answer as one line. */
export function problemText(result) {
  const body = result.body || {};
  const title = body.title || `HTTP ${result.status}`;
  const detail = body.detail ? `: ${body.detail}` : '';
  const retry = result.retryAfter ? ` (retry after ${result.retryAfter} s)` : '';
  return `${result.status || 'no answer'} ${title}${detail}${retry}`;
}
