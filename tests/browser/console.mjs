// Drives the Gatehouse console in Debian's headless Chromium, as a person
// would: sign in, see the overview and the hosts, search, open one, run
// a live query and export its rows, sign out. Run by
// tests/tests/console.rs against a real server with enrolled agents.
//
// Environment: GATEHOUSE_URL (the API's https://localhost:PORT),
// GATEHOUSE_USER, GATEHOUSE_PASSWORD, EXPECT_HOSTS (how many hosts),
// SEARCH (a hostname that matches one host), SCREENSHOTS (a directory to
// save each page's screenshot in; optional), CHROMIUM (default
// /usr/bin/chromium). Prints one line per step; exits non-zero on the
// first failure.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (k, d) => process.env[k] ?? d;
const url = env("GATEHOUSE_URL");
const user = env("GATEHOUSE_USER");
const password = env("GATEHOUSE_PASSWORD");
const expectHosts = Number(env("EXPECT_HOSTS", "0"));
const search = env("SEARCH", "");
const shots = env("SCREENSHOTS", "");

function check(cond, what) {
  if (!cond) throw new Error(`failed: ${what}`);
  console.log(`ok: ${what}`);
}

const profile = mkdtempSync(join(tmpdir(), "gatehouse-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  // The server's certificate chains to the test's own CA.
  ignoreHTTPSErrors: true,
  viewport: { width: 1280, height: 800 },
});
const shot = async (page, name) => {
  if (shots) await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
};
let failed = false;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Script errors; failed requests are expected (401 before signing in,
  // the forged change's 403) and checked where they happen.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text());
  });
  const missing = [];
  page.on("response", (r) => { if (r.status() === 404) missing.push(r.url()); });

  await page.goto(`${url}/`);
  await page.waitForSelector("form#sign-in");
  check(true, "an unsigned visitor is shown the sign-in form");
  await shot(page, "sign-in");

  await page.fill("form#sign-in input[name=name]", user);
  await page.fill("form#sign-in input[name=password]", "not the password at all");
  await page.click("form#sign-in button[type=submit]");
  await page.waitForSelector("form#sign-in .error:not(:empty)");
  check((await page.textContent("form#sign-in .error")).includes("wrong"), "a wrong password is refused with a message");

  await page.fill("form#sign-in input[name=password]", password);
  await page.click("form#sign-in button[type=submit]");
  await page.waitForSelector("[data-stat=hosts] .value");
  const total = (await page.textContent("[data-stat=hosts] .value")).trim();
  check(total === String(expectHosts), `the overview counts ${expectHosts} hosts (saw ${total})`);
  check((await page.textContent("[data-stat=online] .value")).trim() === String(expectHosts), "all of them online");
  await shot(page, "overview");
  await page.click("a[data-nav=hosts]");
  await page.waitForSelector("table#hosts tbody tr[data-host]");
  const rows = await page.locator("table#hosts tbody tr[data-host]").count();
  check(rows === expectHosts, `the hosts page lists the ${expectHosts} enrolled hosts (saw ${rows})`);
  check((await page.textContent("#who")).includes(user), "the signed-in user is shown");
  await shot(page, "hosts");

  const cookies = await context.cookies(url);
  const session = cookies.find((c) => c.name === "gatehouse_session");
  check(session && session.httpOnly && session.secure && session.sameSite === "Strict",
    "the session cookie is HttpOnly, Secure, SameSite=Strict");
  const readable = await page.evaluate(() => document.cookie);
  check(!readable.includes("gatehouse_session"), "page scripts cannot read the session cookie");
  // A change without the CSRF token is refused, even from the console's own origin.
  const forged = await page.evaluate(async () => {
    const r = await fetch("/api/v1/queries/forged", {
      method: "PUT", headers: { "content-type": "application/json" },
      body: JSON.stringify({ sql: "SELECT 1;" }),
    });
    return r.status;
  });
  check(forged === 403, `a change without the CSRF token is refused (${forged})`);

  if (search) {
    await page.fill("form#host-filters input[name=search]", search);
    await page.click("form#host-filters button[type=submit]");
    await page.waitForFunction(() => document.querySelectorAll("table#hosts tbody tr[data-host]").length === 1);
    check(true, `searching "${search}" leaves one host`);
    await page.click("table#hosts tbody tr[data-host] a");
    await page.waitForSelector("dl.facts");
    check((await page.textContent("main h1")).includes(search), "the host's page opens");
    await shot(page, "host");
  }

  // A live query to every host; rows stream in as the agents answer
  // (the Rust side of the test answers for them).
  await page.click("a[data-nav=query]");
  await page.waitForSelector("form#live-query");
  await page.fill("form#live-query textarea[name=sql]", "SELECT 1 AS one;");
  await page.click("#run");
  await page.waitForSelector("#finished", { timeout: 30000 });
  const answered = await page.locator("table#rows tbody tr").count();
  check(answered === expectHosts, `rows arrived from the ${expectHosts} hosts (saw ${answered})`);
  const progress = await page.textContent("#progress");
  check(progress.includes(`answered ${expectHosts} / targeted ${expectHosts}`), `progress reads "${progress}"`);
  await shot(page, "live-query");
  const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#export-csv")]);
  const { readFileSync } = await import("node:fs");
  const csv = readFileSync(await dl.path(), "utf8");
  check(csv.startsWith("host,one\n") && csv.trim().split("\n").length === expectHosts + 1, "the rows export as CSV");

  await page.click("#sign-out");
  await page.waitForSelector("form#sign-in");
  const after = await page.evaluate(async () => (await fetch("/api/v1/whoami")).status);
  check(after === 401, "after signing out the API answers 401");
  // An observer sees no controls to change anything, and the API refuses
  // a change forced from the page anyway.
  const viewer = env("VIEWER_USER", "");
  if (viewer) {
    await page.fill("form#sign-in input[name=name]", viewer);
    await page.fill("form#sign-in input[name=password]", env("VIEWER_PASSWORD"));
    await page.click("form#sign-in button[type=submit]");
    await page.waitForSelector("[data-stat=hosts] .value");
    await page.click("a[data-nav=query]");
    await page.waitForSelector("form#live-query");
    check((await page.locator("#run").count()) === 0, "an observer is offered no Run button");
    const forcedRun = await page.evaluate(async () => {
      const token = document.cookie.match(/gatehouse_csrf=([^;]*)/)[1];
      const r = await fetch("/api/v1/campaigns", {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": token },
        body: JSON.stringify({ sql: "SELECT 1;", all: true }),
      });
      return r.status;
    });
    check(forcedRun === 403, `an observer forcing a live query gets 403 (${forcedRun})`);
    await page.click("#sign-out");
    await page.waitForSelector("form#sign-in");
  }
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
  check(missing.length === 0, `nothing the page asked for is missing (${missing.join(", ")})`);
} catch (e) {
  console.error(String(e));
  failed = true;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
