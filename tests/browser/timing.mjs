// Times the console's pages in headless Chromium (tests/benches/console.rs
// runs it): from opening the page to its content shown, 10 times each
// after one warm-up. Prints a Markdown table.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const url = process.env.GATEHOUSE_URL;
const profile = mkdtempSync(join(tmpdir(), "gatehouse-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  ignoreHTTPSErrors: true,
});
const page = context.pages()[0] ?? (await context.newPage());
await page.goto(`${url}/#/sign-in`);
await page.fill("form#sign-in input[name=name]", process.env.GATEHOUSE_USER);
await page.fill("form#sign-in input[name=password]", process.env.GATEHOUSE_PASSWORD);
await page.click("form#sign-in button[type=submit]");
await page.waitForSelector("[data-stat=hosts] .value");

async function time(hash, selector) {
  const t = [];
  for (let i = 0; i < 11; i++) {
    await page.goto("about:blank");
    const start = performance.now();
    await page.goto(`${url}/${hash}`);
    await page.waitForSelector(selector);
    if (i > 0) t.push(performance.now() - start);
  }
  t.sort((a, b) => a - b);
  return [t[Math.floor(t.length / 2)], t[t.length - 1]];
}
const rows = [
  ["overview (full page load: HTML, script, whoami, summary, alerts)", await time("#/overview", "[data-stat=hosts] .value")],
  ["hosts (full page load, first 50 hosts shown)", await time("#/hosts", "table#hosts tbody tr[data-host]")],
  ["hosts, platform filter", await time("#/hosts?platform=darwin", "table#hosts tbody tr[data-host]")],
];
console.log("| Chromium: page | median ms | worst ms |");
console.log("|---|---|---|");
for (const [what, [med, worst]] of rows) console.log(`| ${what} | ${med.toFixed(0)} | ${worst.toFixed(0)} |`);
await context.close();
rmSync(profile, { recursive: true, force: true });
