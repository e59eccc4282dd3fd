// The browser tests' shared plumbing: launching a browser (Debian's Chromium through
// playwright-core, or Firefox ESR through puppeteer-core over WebDriver BiDi), catching whatever
// the page reports as an error, and the checks both pages make the same way (a focus ring on Tab,
// nothing wider than a phone, screenshots). The page scripts (lab.mjs, chaos.mjs) talk only to the
// `Browser` below, so the same checks run in both browsers.
//
//   node <page script> <bff url> <screenshot dir> [chromium|firefox]
//
// `LAB_CHROMIUM` and `LAB_FIREFOX` point at other browser binaries.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The desktop viewport every run starts in. */
const DESKTOP = { width: 1280, height: 900 };
/** The phone width the pages must fit. */
export const PHONE_WIDTH = 360;
/** How often an in-page condition is checked while waiting (ms). */
const POLL_MS = 50;

/** The browsers a run can use, by name, with their default binaries. */
export const BROWSERS = {
  chromium: () => process.env.LAB_CHROMIUM || '/usr/bin/chromium',
  firefox: () => process.env.LAB_FIREFOX || '/usr/bin/firefox-esr',
};

/** `[base, shots, browser name]` from the command line, or exits with the usage. */
export function args(script) {
  const [base, shots, name = 'chromium'] = process.argv.slice(2);
  if (!base || !shots || !BROWSERS[name]) {
    console.error(`usage: node ${script} <bff url> <screenshot dir> [chromium|firefox]`);
    process.exit(2);
  }
  return { base, shots, name };
}

export function step(text) {
  console.log(`- ${text}`);
}

/**
 * One browser and its one page, whichever the engine. Errors the page reports (console errors,
 * uncaught exceptions, failed requests, 4xx/5xx answers) are collected in `errors` unless the
 * test said it expects them (`expectStatus`, `refuseStream`).
 */
export class Browser {
  constructor(name, raw, page, cleanup) {
    this.name = name;
    this.raw = raw;
    this.page = page;
    this.cleanup = cleanup;
    this.errors = [];
    /** `(url, status)` pairs the test provokes on purpose, each allowed once. */
    this.expected = [];
    /** Statuses a panel shows on purpose wherever they come from (a 429 refusal). */
    this.tolerated = new Set();
    /** Whether the test is refusing the live stream on purpose. */
    this.refusing = false;
    /** Screenshot names get this suffix, so both browsers' shots can sit side by side. */
    this.suffix = name === 'chromium' ? '' : `-${name}`;
  }

  get isFirefox() {
    return this.name === 'firefox';
  }

  /** Launches `name` with a desktop viewport and starts watching the page for errors. */
  static async launch(name) {
    const executablePath = BROWSERS[name]();
    if (name === 'firefox') {
      const { default: puppeteer } = await import('puppeteer-core');
      const raw = await puppeteer.launch({
        browser: 'firefox',
        protocol: 'webDriverBiDi',
        executablePath,
        headless: true,
        defaultViewport: DESKTOP,
      });
      const page = await raw.newPage();
      const browser = new Browser(name, raw, page, () => raw.close());
      browser.watch();
      return browser;
    }
    const { chromium } = await import('playwright-core');
    const profile = mkdtempSync(join(tmpdir(), 'lab-chromium-'));
    const raw = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      viewport: DESKTOP,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const page = raw.pages()[0] || await raw.newPage();
    const browser = new Browser(name, raw, page, async () => {
      await raw.close();
      rmSync(profile, { recursive: true, force: true });
    });
    browser.watch();
    return browser;
  }

  watch() {
    const page = this.page;
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const where = msg.location()?.url || '';
      const text = msg.text();
      if (this.streamNoise(`${where} ${text}`)) return;
      // Chromium logs an answer the test provoked on purpose as a failed resource load.
      if (this.expected.some((e) => text.includes(`status of ${e.status}`))) return;
      this.errors.push(`console: ${text} (${where || 'no url'})`);
    });
    page.on('response', (answer) => {
      const status = answer.status();
      if (status < 400 || this.tolerated.has(status)) return;
      const url = answer.url();
      const expected = this.expected.find((e) => !e.seen && e.status === status && url.includes(e.url));
      if (expected) expected.seen = true;
      else this.errors.push(`HTTP ${status} for ${url}`);
    });
    page.on('pageerror', (error) => {
      const text = String(error.message || error);
      if (!this.streamNoise(text)) this.errors.push(`page error: ${text}`);
    });
    page.on('requestfailed', (request) => {
      // The live stream is closed when the page goes away; that is not an error of the page.
      if (!request.url().includes('/api/events')) {
        this.errors.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
      }
    });
  }

  /**
   * Whether an error report is about the live stream being refused or cut, which is not an error
   * of the page: while the test refuses the stream, the browser reports each refused attempt
   * (Firefox as an uncaught error, and later than Chromium), and Firefox also reports the stream
   * cut when the page goes away. The page's own reaction is what the tests check instead.
   */
  streamNoise(text) {
    return (this.refusing || this.isFirefox) && text.includes('/api/events');
  }

  /** Allows one `status` answer from a URL containing `url`: the test provokes it. */
  expectStatus(url, status) {
    this.expected.push({ url, status, seen: false });
  }

  /** Allows every `status` answer: a refusal the page shows as what it is. */
  tolerate(status) {
    this.tolerated.add(status);
  }

  /** Refuses (`true`) or lets through (`false`) the live stream. */
  async refuseStream(refuse) {
    if (refuse) this.refusing = true;
    if (this.isFirefox) {
      if (refuse) {
        await this.page.setRequestInterception(true);
        this.onRequest = (request) => {
          if (request.url().includes('/api/events')) request.abort();
          else request.continue();
        };
        this.page.on('request', this.onRequest);
      } else {
        this.page.off('request', this.onRequest);
        await this.page.setRequestInterception(false);
      }
    } else if (refuse) {
      await this.page.route('**/api/events*', (route) => route.abort());
    } else {
      await this.page.unroute('**/api/events*');
    }
    if (!refuse) this.refusing = false;
  }

  /** Loads `url`; throws unless it answers 200. */
  async goto(url) {
    const response = await this.page.goto(url, { waitUntil: 'load' });
    if (!response || response.status() !== 200) throw new Error(`GET ${url} answered ${response && response.status()}`);
  }

  /** Waits until `fn(arg)` is truthy in the page, and answers its value. */
  async until(fn, arg, timeout) {
    const handle = this.isFirefox
      ? await this.page.waitForFunction(fn, { timeout, polling: POLL_MS }, arg)
      : await this.page.waitForFunction(fn, arg, { timeout, polling: POLL_MS });
    const value = await handle.jsonValue();
    await handle.dispose();
    return value;
  }

  /**
   * Waits for an element matching `selector` (whose text contains `text`, if given) to be there,
   * or with `gone`, for none to be.
   */
  async waitFor(selector, { text = null, gone = false, timeout }) {
    try {
      await this.until(({ selector, text, gone }) => {
        const found = [...document.querySelectorAll(selector)]
          .some((node) => text === null || node.textContent.includes(text));
        return gone ? !found : found;
      }, { selector, text, gone }, timeout);
    } catch (error) {
      const what = `${selector}${text === null ? '' : ` with "${text}"`}`;
      throw new Error(`${gone ? 'still there' : 'never there'} after ${timeout} ms: ${what} (${error.message.split('\n')[0]})`);
    }
  }

  /** Answers `fn(arg)` evaluated in the page. */
  evaluate(fn, arg) {
    return this.page.evaluate(fn, arg);
  }

  count(selector) {
    return this.evaluate((s) => document.querySelectorAll(s).length, selector);
  }

  /** The first match's attribute `name`, or null. */
  attr(selector, name) {
    return this.evaluate(({ selector, name }) => document.querySelector(selector)?.getAttribute(name) ?? null, { selector, name });
  }

  /** The first match's rendered text. */
  async text(selector) {
    const text = await this.evaluate((s) => {
      const node = document.querySelector(s);
      return node ? node.innerText : null;
    }, selector);
    if (text === null) throw new Error(`no ${selector}`);
    return text;
  }

  /** A real click (scrolled into view, at the element's centre). */
  click(selector) {
    return this.page.click(selector);
  }

  /** Replaces an input's value as if typed. */
  async fill(selector, value) {
    if (this.isFirefox) await this.page.locator(selector).fill(value);
    else await this.page.fill(selector, value);
  }

  async select(selector, value) {
    if (this.isFirefox) await this.page.select(selector, value);
    else await this.page.selectOption(selector, value);
  }

  /** Sets a checkbox by clicking it when it is not already `checked`. */
  async setChecked(selector, checked) {
    if ((await this.evaluate((s) => document.querySelector(s)?.checked, selector)) !== checked) await this.click(selector);
  }

  focus(selector) {
    return this.page.focus(selector);
  }

  press(key) {
    return this.page.keyboard.press(key);
  }

  pause(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  async viewport(width, height) {
    if (this.isFirefox) await this.page.setViewport({ width, height });
    else await this.page.setViewportSize({ width, height });
    await this.pause(200);
  }

  /**
   * `dark` or `light` for `prefers-color-scheme`; false where the driver cannot emulate it
   * (puppeteer emulates media features over CDP only, not WebDriver BiDi).
   */
  async colorScheme(scheme) {
    if (this.isFirefox) return false;
    await this.page.emulateMedia({ colorScheme: scheme });
    return true;
  }

  /** The viewport in dark mode as `<shots>/<name><suffix>.png`, where it can be emulated. */
  async darkScreenshot(shots, name) {
    if (!(await this.colorScheme('dark'))) {
      step(`dark mode not emulated in ${this.name} (no WebDriver BiDi command for it): no ${name} screenshot`);
      return;
    }
    await this.evaluate(() => window.scrollTo(0, 0));
    await this.screenshot(shots, name);
    await this.colorScheme('light');
  }

  /** Saves `<shots>/<name><suffix>.png` (the page, or only the viewport). */
  async screenshot(shots, name, { fullPage = false } = {}) {
    mkdirSync(shots, { recursive: true });
    await this.page.screenshot({ path: join(shots, `${name}${this.suffix}.png`), fullPage, type: 'png' });
  }

  /**
   * Runs `shoot` with the sticky page header let go: an element's screenshot scrolls it to the
   * top of the viewport, where the header would cover it.
   */
  async withoutStickyHeader(shoot) {
    await this.evaluate(() => { for (const top of document.querySelectorAll('header.top')) top.style.position = 'static'; });
    try {
      await shoot();
    } finally {
      await this.evaluate(() => { for (const top of document.querySelectorAll('header.top')) top.style.position = ''; });
    }
  }

  /** With LAB_SHOT_SECTIONS=<dir>, one screenshot per section too, for a person to look at. */
  async sections(prefix, selectors) {
    const dir = process.env.LAB_SHOT_SECTIONS;
    if (!dir) return;
    mkdirSync(dir, { recursive: true });
    await this.withoutStickyHeader(async () => {
      for (const [id, selector] of Object.entries(selectors)) {
        const node = await this.page.$(selector);
        if (node) await node.screenshot({ path: join(dir, `${prefix}-${id}${this.suffix}.png`), type: 'png' });
      }
    });
  }

  /** From the top, Tab twice reaches a control whose focus is drawn; answers what it focused. */
  async checkFocusRing() {
    // Blurring alone leaves the browsers' sequential-focus starting point where the last focus
    // was (deep in the page); focusing the body moves it back to the top.
    await this.evaluate(() => {
      document.activeElement?.blur();
      window.scrollTo(0, 0);
      document.body.tabIndex = -1;
      document.body.focus();
      document.body.removeAttribute('tabindex');
    });
    await this.press('Tab');
    await this.press('Tab');
    const focused = await this.evaluate(() => {
      const node = document.activeElement;
      if (!node) return null;
      const style = getComputedStyle(node);
      return { tag: node.tagName, outline: style.outlineStyle, width: parseFloat(style.outlineWidth) || 0 };
    });
    if (!focused || focused.tag === 'BODY' || focused.outline === 'none' || focused.width < 1) {
      throw new Error(`Tab did not show a focused control: ${JSON.stringify(focused)}`);
    }
    step(`Tab focuses <${focused.tag.toLowerCase()}> with a visible ${focused.width} px ${focused.outline} outline`);
    await this.evaluate(() => window.scrollTo(0, 0));
  }

  /** Throws unless every live region (polite or assertive) has a name a screen reader reads. */
  async checkLiveRegions() {
    const { count, unnamed } = await this.evaluate(() => {
      const regions = [...document.querySelectorAll('[aria-live]:not([aria-live="off"])')];
      const named = (node) => (node.getAttribute('aria-label') || '').trim()
        || (node.getAttribute('aria-labelledby') || '').split(/\s+/).some((id) => id && document.getElementById(id)?.textContent.trim());
      return {
        count: regions.length,
        unnamed: regions.filter((node) => !named(node)).map((node) => node.id || `${node.tagName.toLowerCase()}.${node.className}`),
      };
    });
    if (unnamed.length) throw new Error(`live regions without a name: ${unnamed.join(', ')}`);
    step(`${count} live regions, each named`);
  }

  /** Saves one element's screenshot as `<shots>/<name><suffix>.png`. */
  async elementScreenshot(shots, name, selector) {
    mkdirSync(shots, { recursive: true });
    const node = await this.page.$(selector);
    if (!node) throw new Error(`no ${selector} to screenshot`);
    await this.withoutStickyHeader(() => node.screenshot({ path: join(shots, `${name}${this.suffix}.png`), type: 'png' }));
  }

  /** Resizes to a phone and throws if anything sticks out sideways. */
  async checkPhone() {
    await this.viewport(PHONE_WIDTH, 780);
    const overflow = await this.evaluate((width) => {
      const wide = [];
      for (const node of document.querySelectorAll('body *')) {
        const box = node.getBoundingClientRect();
        if (box.width > 0 && box.right > width + 1) wide.push(`${node.tagName.toLowerCase()}${node.id ? `#${node.id}` : ''}.${node.className} right=${Math.round(box.right)}`);
      }
      return { scroll: document.documentElement.scrollWidth, wide: wide.slice(0, 10) };
    }, PHONE_WIDTH);
    if (overflow.scroll > PHONE_WIDTH) throw new Error(`at ${PHONE_WIDTH} px the page is ${overflow.scroll} px wide: ${overflow.wide.join(', ')}`);
    step(`nothing overflows at ${PHONE_WIDTH} px`);
  }

  /** Throws with every error the page reported. */
  assertNoErrors() {
    if (this.errors.length) throw new Error(`errors on the page:\n${this.errors.join('\n')}`);
  }
}

/**
 * Runs `test(browser)` in the browser named on the command line within `budgetMs`, then closes
 * it and exits 0, or 1 with the reason.
 */
export async function run(script, budgetMs, test) {
  const { base, shots, name } = args(script);
  const budget = setTimeout(() => {
    console.error(`FAIL: the run took longer than ${budgetMs} ms`);
    process.exit(1);
  }, budgetMs);
  let browser = null;
  let failed = null;
  try {
    browser = await Browser.launch(name);
    step(`${name} launched`);
    await test(browser, { base, shots });
    browser.assertNoErrors();
  } catch (error) {
    failed = error;
  } finally {
    await browser?.cleanup().catch(() => {});
    clearTimeout(budget);
  }
  if (failed) {
    console.error(`FAIL in ${name}: ${failed.stack || failed}`);
    if (browser?.errors.length) console.error(browser.errors.join('\n'));
    process.exit(1);
  }
  console.log(`ok: ${script} passed in ${name}`);
}
