// "Decisions on record": the ADRs in docs/adr/, embedded at build time as adr.json, each with
// its title, status and one-line decision, expandable to the whole record (rendered from its
// Markdown as plain text blocks: headings, paragraphs and lists, never as HTML).

import { el, fill } from './dom.js';

function inline(text) {
  // `code` spans become <code>; everything else stays text.
  return text.split(/(`[^`]+`)/).map((part) =>
    part.startsWith('`') && part.endsWith('`') && part.length > 1 ? el('code', {}, part.slice(1, -1)) : part);
}

function render(body) {
  const blocks = [];
  let list = null;
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) blocks.push(el('p', {}, inline(paragraph.join(' '))));
    paragraph = [];
  };
  for (const raw of body.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('# ') || /^- (Status|Date):/.test(line)) continue;
    if (line.startsWith('## ')) {
      flush();
      list = null;
      blocks.push(el('h4', {}, line.slice(3)));
    } else if (/^\s*[-*] /.test(line)) {
      flush();
      if (!list) {
        list = el('ul');
        blocks.push(list);
      }
      list.append(el('li', {}, inline(line.replace(/^\s*[-*] /, ''))));
    } else if (line.trim() === '') {
      flush();
      list = null;
    } else if (list && /^\s+/.test(raw)) {
      list.lastChild.append(' ', ...inline(line.trim()));
    } else {
      list = null;
      paragraph.push(line.trim());
    }
  }
  flush();
  return blocks;
}

/** A decision's first sentence, cut at a word boundary when it runs long. */
const ONE_LINE = 180;

function oneLine(text) {
  if (text.length <= ONE_LINE) return text;
  let cut = text.slice(0, ONE_LINE);
  cut = cut.slice(0, cut.lastIndexOf(' '));
  // Never leave a code span open.
  if ((cut.match(/`/g) || []).length % 2) cut = cut.slice(0, cut.lastIndexOf('`'));
  return `${cut.trimEnd()} …`;
}

/** Loads and renders the records. */
export async function start() {
  const target = document.getElementById('adrs');
  try {
    const response = await fetch(new URL('./adr.json', import.meta.url));
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const records = await response.json();
    fill(target, records.map((r) => el('details', { class: 'adr' },
      el('summary', {},
        el('span', { class: 'adr-title' }, r.number ? `ADR ${r.number}. ` : '', inline(r.title)),
        ' ', el('span', { class: `status ${String(r.status).toLowerCase()}` }, r.status || 'unknown'),
        el('span', { class: 'adr-decision' }, inline(oneLine(r.decision || '')))),
      el('div', { class: 'adr-body' }, render(r.body || ''), el('p', { class: 'muted' }, `docs/adr/${r.file}${r.date ? ` · ${r.date}` : ''}`)))));
  } catch (error) {
    fill(target, el('p', {}, `The decision records could not be loaded (${error.message}).`));
  }
}
