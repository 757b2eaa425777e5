// A line-oriented bridge from pytest to one headless Chromium page, driven by playwright-core.
//
// Why: the tests are pytest (they share the real-ComfyUI fixtures of tests/comfy), while the browser
// driver is the npm package playwright-core (no browser download; Debian's Chromium). pytest starts
// this script once per session and sends one JSON request per line on stdin:
//   {"id": 1, "op": "evaluate", "args": {...}}
// and gets one JSON line back on stdout: {"id": 1, "ok": true, "value": ...} or {"id": 1, "ok": false,
// "error": "..."}. Console messages and page errors are collected and handed out by the "console" op.
//
// Environment: ACESTEP_CHROMIUM (binary), ACESTEP_USER_DATA_DIR (a fresh profile folder),
// NODE_PATH-like ACESTEP_NODE_MODULES (folder holding playwright-core).

import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

const require = createRequire(path.join(process.env.ACESTEP_NODE_MODULES, "noop.js"));
const { chromium } = require("playwright-core");

const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
];

const consoleLog = [];
let context = null;
let page = null;

function record(kind, text, location) {
  consoleLog.push({ kind, text, url: location?.url ?? "", line: location?.lineNumber ?? 0 });
}

async function launch({ width = 1600, height = 1000 }) {
  context = await chromium.launchPersistentContext(process.env.ACESTEP_USER_DATA_DIR, {
    executablePath: process.env.ACESTEP_CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width, height },
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (msg) => record(msg.type(), msg.text(), msg.location()));
  page.on("pageerror", (err) => record("pageerror", `${err.name}: ${err.message}\n${err.stack ?? ""}`, null));
  page.on("requestfailed", (req) => record("requestfailed", `${req.failure()?.errorText ?? "failed"} ${req.url()}`, null));
  page.on("response", (res) => {
    if (res.status() >= 400) record("http", `${res.status()} ${res.url()}`, null);
  });
  return { version: context.browser()?.version() ?? "unknown" };
}

// Each op takes the request's args and returns a JSON-able value.
const OPS = {
  launch,
  goto: async ({ url, timeout = 60000 }) => {
    await page.goto(url, { waitUntil: "domcontentloaded", timeout });
  },
  // `fn` is the source of a (possibly async) function of one argument, run inside the page.
  evaluate: async ({ fn, arg = null }) => page.evaluate(([source, value]) => {
    // eslint-disable-next-line no-new-func
    const f = new Function(`return (${source});`)();
    return f(value);
  }, [fn, arg]),
  wait_for: async ({ fn, arg = null, timeout = 30000 }) => {
    const handle = await page.waitForFunction(([source, value]) => {
      const f = new Function(`return (${source});`)();
      return f(value);
    }, [fn, arg], { timeout, polling: 100 });
    // Only plain data crosses back; a truthy object that JSON cannot hold (a DOM node, `app`) is `true`.
    return handle.evaluate((value) => {
      try { return JSON.parse(JSON.stringify(value)) ?? true; } catch { return true; }
    });
  },
  screenshot: async ({ path: file }) => {
    await page.screenshot({ path: file });
  },
  mouse: async ({ steps }) => {
    for (const [action, x, y, extra] of steps) {
      if (action === "move") await page.mouse.move(x, y, { steps: extra ?? 1 });
      else if (action === "down") await page.mouse.down();
      else if (action === "up") await page.mouse.up();
      else if (action === "click") await page.mouse.click(x, y);
      else if (action === "dblclick") await page.mouse.dblclick(x, y);
      else throw new Error(`unknown mouse action ${action}`);
    }
  },
  click: async ({ selector, timeout = 10000 }) => {
    await page.click(selector, { timeout });
  },
  set_files: async ({ selector, files }) => {
    await page.setInputFiles(selector, files);
  },
  focus: async ({ selector }) => {
    await page.focus(selector);
  },
  type: async ({ text, delay = 0 }) => {
    await page.keyboard.type(text, { delay });
  },
  press: async ({ key }) => {
    await page.keyboard.press(key);
  },
  console: async ({ clear = true }) => {
    const copy = consoleLog.slice();
    if (clear) consoleLog.length = 0;
    return copy;
  },
  close: async () => {
    await context?.close();
    context = null;
  },
};

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    let request;
    try {
      request = JSON.parse(line);
      const value = await OPS[request.op](request.args ?? {});
      process.stdout.write(JSON.stringify({ id: request.id, ok: true, value: value ?? null }) + "\n");
    } catch (err) {
      process.stdout.write(JSON.stringify({ id: request?.id ?? null, ok: false, error: String(err?.stack ?? err) }) + "\n");
    }
  });
});
lines.on("close", () => {
  queue.then(() => context?.close()).finally(() => process.exit(0));
});
