// The live stream (`GET /api/events`): one EventSource for the page, its connection state shown
// honestly ("connecting…", "waiting for snapshot…", "live", "reconnecting"), and a dispatcher
// the other modules subscribe to by event kind.

const KINDS = ['health', 'metrics', 'console', 'message', 'saga', 'breaker', 'rate-limit', 'demo', 'chaos', 'vault'];

const listeners = new Map();
let source = null;
let snapshotSeen = false;

/** Calls `handler(event)` for every live event of `kind` (`{at, source, kind, data, session?}`). */
export function on(kind, handler) {
  if (!listeners.has(kind)) listeners.set(kind, []);
  listeners.get(kind).push(handler);
}

function setState(state, text) {
  const node = document.getElementById('conn');
  if (!node) return;
  node.dataset.state = state;
  node.textContent = text;
}

function dispatch(kind, raw) {
  let event;
  try {
    event = JSON.parse(raw);
  } catch {
    return;
  }
  if (kind === 'health' && !snapshotSeen) {
    snapshotSeen = true;
    setState('live', 'live');
  }
  for (const handler of listeners.get(kind) || []) {
    try {
      handler(event);
    } catch (error) {
      console.warn(`live ${kind} handler failed`, error);
    }
  }
}

/**
 * Back-off (ms) between our own reopenings of a stream the browser gave up on, the last one
 * repeated: soon enough to catch a restarted BFF, slow enough not to hammer one that is down.
 */
const REOPEN_MS = [1000, 2000, 5000, 10000];
let reopenings = 0;

/**
 * Opens the stream; the browser resumes it with `Last-Event-ID` after a drop. A stream whose
 * connection failed outright is closed for good by Firefox (as the spec says) while Chromium
 * retries; so a closed stream is reopened here, with back-off, and both come back the same way.
 */
export function connect() {
  setState('connecting', 'connecting…');
  source = new EventSource('/api/events', { withCredentials: true });
  source.addEventListener('open', () => {
    snapshotSeen = false;
    reopenings = 0;
    setState('waiting', 'waiting for snapshot…');
  });
  source.addEventListener('error', () => {
    snapshotSeen = false;
    setState('reconnecting', 'reconnecting');
    if (source.readyState !== EventSource.CLOSED) return;
    source.close();
    const wait = REOPEN_MS[Math.min(reopenings, REOPEN_MS.length - 1)];
    reopenings += 1;
    setTimeout(() => {
      connect();
      setState('reconnecting', 'reconnecting');
    }, wait);
  });
  for (const kind of KINDS) {
    source.addEventListener(kind, (message) => dispatch(kind, message.data));
  }
}
