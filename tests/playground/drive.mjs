// Drives the playground page in headless Chromium over the DevTools protocol, with no
// package beyond Node itself: types the article into the page, clicks Classify, waits
// for the answer, checks the label shown, and saves a screenshot.
//
// Usage: node drive.mjs <page url> <article file> <expected label> <screenshot.png> <chromium>
// Exits 0 when the page shows the expected label, 1 otherwise; gives up after 90 s.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, articleFile, expected, screenshot, chromiumPath] = process.argv.slice(2);
if (!url || !articleFile || !expected || !screenshot || !chromiumPath) {
  console.error("usage: node drive.mjs <url> <article file> <expected label> <screenshot.png> <chromium>");
  process.exit(2);
}
const article = readFileSync(articleFile, "utf8");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const profile = mkdtempSync(join(tmpdir(), "topics-chromium-"));
const browser = spawn(chromiumPath, [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-port=0",
  `--user-data-dir=${profile}`, "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });
let browserLog = "";
browser.stderr.on("data", (chunk) => { browserLog += chunk; });

let finished = false;
function stopBrowser() {
  if (browser.exitCode === null && browser.pid) {
    try { process.kill(browser.pid, "SIGTERM"); } catch { /* already gone */ }
  }
}
function finish(code, message) {
  if (finished) return;
  finished = true;
  if (message) console.error(message);
  stopBrowser();
  // Give Chromium a moment to let go of its profile before removing it.
  setTimeout(() => {
    try { rmSync(profile, { recursive: true, force: true }); } catch { /* best effort */ }
    process.exit(code);
  }, 500);
}
setTimeout(() => finish(1, "gave up after 90 s\n" + browserLog.slice(-2000)), 90_000).unref();

// Chromium writes the port it picked, and the browser target's path, into the profile.
async function devtoolsAddress() {
  const file = join(profile, "DevToolsActivePort");
  for (let i = 0; i < 300; i++) {
    if (existsSync(file)) {
      const [port, path] = readFileSync(file, "utf8").split("\n");
      if (port && path) return `ws://127.0.0.1:${port.trim()}${path.trim()}`;
    }
    if (browser.exitCode !== null) throw new Error("chromium exited:\n" + browserLog);
    await sleep(100);
  }
  throw new Error("chromium did not open its DevTools port:\n" + browserLog);
}

class Cdp {
  constructor(socket) {
    this.socket = socket;
    this.next = 1;
    this.pending = new Map();
    this.waiters = [];
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.id && this.pending.has(message.id)) {
        const { resolve, reject } = this.pending.get(message.id);
        this.pending.delete(message.id);
        if (message.error) reject(new Error(JSON.stringify(message.error)));
        else resolve(message.result);
      } else if (message.method) {
        this.waiters = this.waiters.filter((w) => !(w.method === message.method && (w.resolve(message.params), true)));
      }
    });
  }
  send(method, params = {}, sessionId) {
    const id = this.next++;
    this.socket.send(JSON.stringify({ id, method, params, sessionId }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }
  once(method) {
    return new Promise((resolve) => this.waiters.push({ method, resolve }));
  }
}

async function main() {
  const socket = new WebSocket(await devtoolsAddress());
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve);
    socket.addEventListener("error", () => reject(new Error("cannot open the DevTools socket")));
  });
  const cdp = new Cdp(socket);
  const { targetId } = await cdp.send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await cdp.send("Target.attachToTarget", { targetId, flatten: true });
  const page = (method, params) => cdp.send(method, params, sessionId);
  const evaluate = async (expression) => {
    const { result, exceptionDetails } = await page("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
    if (exceptionDetails) throw new Error("page script failed: " + JSON.stringify(exceptionDetails));
    return result.value;
  };

  await page("Page.enable");
  await page("Runtime.enable");
  await page("Emulation.setDeviceMetricsOverride", { width: 1400, height: 1000, deviceScaleFactor: 1, mobile: false });
  const loaded = cdp.once("Page.loadEventFired");
  await page("Page.navigate", { url });
  await loaded;

  // Type the article as a user pasting it would, then click the button.
  await evaluate("document.getElementById('text').focus()");
  await page("Input.insertText", { text: article });
  const typed = await evaluate("document.getElementById('text').value.length");
  if (typed !== article.length) throw new Error(`the text area holds ${typed} characters, not ${article.length}`);
  const box = await evaluate(`(() => { const r = document.getElementById('classify').getBoundingClientRect();
    return { x: r.x + r.width / 2, y: r.y + r.height / 2 }; })()`);
  for (const type of ["mousePressed", "mouseReleased"]) {
    await page("Input.dispatchMouseEvent", { type, x: box.x, y: box.y, button: "left", clickCount: 1 });
  }

  let state = "";
  for (let i = 0; i < 300 && state !== "done" && state !== "error"; i++) {
    await sleep(100);
    state = await evaluate("document.body.dataset.state || ''");
  }
  const shown = await evaluate("document.getElementById('label').textContent");
  const problem = await evaluate("document.getElementById('error').textContent");

  // The whole page, however tall the result made it.
  const height = await evaluate("Math.ceil(document.documentElement.scrollHeight)");
  await page("Emulation.setDeviceMetricsOverride", { width: 1400, height: Math.min(height, 4000), deviceScaleFactor: 1, mobile: false });
  await sleep(200);
  const { data } = await page("Page.captureScreenshot", { format: "png" });
  writeFileSync(screenshot, Buffer.from(data, "base64"));
  console.log(`screenshot: ${screenshot}`);

  if (state !== "done") return finish(1, `the page did not show an answer (state ${JSON.stringify(state)}): ${problem}`);
  if (shown !== expected) return finish(1, `the page shows label ${JSON.stringify(shown)}, expected ${JSON.stringify(expected)}`);
  const segments = await evaluate("document.querySelectorAll('#article .segment').length");
  const marks = await evaluate("document.querySelectorAll('#article mark').length");
  const bars = await evaluate("document.querySelectorAll('#scores .bar').length");
  const direction = await evaluate("getComputedStyle(document.getElementById('article')).direction");
  console.log(`label shown: ${shown}; ${bars} score bars, ${segments} segments, ${marks} highlighted terms, text direction ${direction}`);
  if (segments === 0 || marks === 0 || bars === 0) return finish(1, "the answer lacks segments, highlighted terms or score bars");
  if (direction !== "rtl") return finish(1, "the Arabic article is not laid out right to left");
  finish(0);
}

main().catch((error) => finish(1, String(error && error.stack || error)));
