// Drives the Gatehouse console in Debian's headless Chromium, as a person
// would: sign in, see the overview and the hosts, search, open one, pick
// hosts for a live query (with its target count and osquery table
// completion), run one and export its rows, edit a schedule (the API's
// refusal shown next to the field, then the host's config changing),
// download a carve, visit every page; an observer sees no write controls
// and is refused a forced change; an admin filters the audit log; sign
// out. Run by tests/tests/console.rs against a real server with enrolled
// agents.
//
// Environment: GATEHOUSE_URL (the API's https://localhost:PORT),
// GATEHOUSE_USER, GATEHOUSE_PASSWORD (an operator), VIEWER_USER,
// VIEWER_PASSWORD (an observer), ADMIN_USER, ADMIN_PASSWORD (an admin),
// EXPECT_HOSTS (how many hosts), SEARCH (a hostname that matches one
// host), LOGGING_HOST (the id of a host that logged results and status
// lines), SCHEDULE (a schedule every host runs), CARVE_SHA256 (the SHA-256
// of the one complete carve), SCREENSHOTS (a directory to save each
// page's screenshot in; optional), CHROMIUM (default /usr/bin/chromium).
// Prints one line per step; exits non-zero on the first failure.
import { chromium } from "playwright-core";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (k, d) => process.env[k] ?? d;
const url = env("GATEHOUSE_URL");
const user = env("GATEHOUSE_USER");
const password = env("GATEHOUSE_PASSWORD");
const expectHosts = Number(env("EXPECT_HOSTS", "0"));
const search = env("SEARCH", "");
const shots = env("SCREENSHOTS", "");
const schedule = env("SCHEDULE", "");
const carveSha = env("CARVE_SHA256", "");

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
  }

  // Hosts picked on the hosts page become a live query's targets, counted
  // before anything runs; the SQL editor completes osquery's tables.
  await page.goto(`${url}/#/hosts`);
  await page.waitForSelector("table#hosts tbody tr[data-host] input[type=checkbox]");
  await page.locator("table#hosts tbody tr[data-host] input[type=checkbox]").first().check();
  check((await page.textContent("#picked")).includes("1 picked"), "a host is picked for a live query");
  await page.click("#query-picked");
  await page.waitForSelector("form#live-query");
  await page.waitForFunction(() => document.querySelector("#target-count").textContent.includes("1 host targeted"));
  check(true, "the live query targets the picked host, counted before running");
  await page.fill("form#live-query textarea[name=sql]", "");
  await page.type("form#live-query textarea[name=sql]", "SELECT version FROM osquery_in");
  await page.waitForSelector("#completions li");
  const offered = await page.locator("#completions li .name").allTextContents();
  check(offered.includes("osquery_info"), `the editor offers osquery's tables (${offered.join(", ")})`);
  await shot(page, "live-query-completion");
  await page.keyboard.press("Tab");
  check((await page.inputValue("form#live-query textarea[name=sql]")) === "SELECT version FROM osquery_info", "Tab completes the table name");
  await page.type("form#live-query textarea[name=sql]", " WHERE star");
  await page.waitForFunction(() => [...document.querySelectorAll("#completions li .name")].some((n) => n.textContent === "start_time"));
  check(true, "the editor offers the columns of the table the query reads");
  await page.keyboard.press("Escape");

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
  const csv = readFileSync(await dl.path(), "utf8");
  check(csv.startsWith("host,one\n") && csv.trim().split("\n").length === expectHosts + 1, "the rows export as CSV");

  // Edit a schedule: the API's refusal shows next to the field; the saved
  // change reaches the config the host gets.
  if (schedule) {
    await page.click("a[data-nav=schedules]");
    await page.waitForSelector(`table#schedules tr[data-key="${schedule}"]`);
    await shot(page, "schedules");
    await page.click(`table#schedules tr[data-key="${schedule}"] button:text("Edit")`);
    await page.waitForSelector("form#edit-schedules");
    await page.fill("form#edit-schedules input[name=interval]", "0");
    await page.click("form#edit-schedules button[type=submit]");
    await page.waitForSelector("form#edit-schedules [data-error-for=interval]:not(:empty)");
    const said = await page.textContent("form#edit-schedules [data-error-for=interval]");
    check(said.includes("interval 0"), `the API's refusal is shown next to the interval field ("${said}")`);
    await shot(page, "schedule-edit");
    await page.fill("form#edit-schedules input[name=interval]", "120");
    await page.click("form#edit-schedules button[type=submit]");
    await page.waitForFunction((name) => {
      const row = document.querySelector(`table#schedules tr[data-key="${name}"]`);
      return row && row.textContent.includes("120 s");
    }, schedule);
    check(true, "the schedule is saved with its new interval");
    await page.goto(`${url}/#/hosts/${env("LOGGING_HOST")}`);
    await page.waitForFunction(() => (document.querySelector("#host-config") || {}).textContent?.includes('"interval": 120'));
    check(true, "the host's page shows the config it gets, with the new interval");
    await page.waitForSelector("#host-campaigns table tbody tr");
    check((await page.textContent("#host-campaigns")).includes("SELECT 1 AS one"), "the host's page lists the live queries it was asked");
    await page.waitForSelector("#host-results table tbody tr");
    check((await page.textContent("#host-results")).includes("uptime"), "the host's page shows its recent results per scheduled query");
    check((await page.locator("#host-status tr.error").count()) === 1, "the host's page highlights its status log error");
    await shot(page, "host");
  }

  if (carveSha) {
    await page.click("a[data-nav=carves]");
    await page.waitForSelector("table#carves a[data-carve]");
    await shot(page, "carves");
    const [carve] = await Promise.all([page.waitForEvent("download"), page.click("table#carves a[data-carve]")]);
    const got = createHash("sha256").update(readFileSync(await carve.path())).digest("hex");
    check(got === carveSha, "the carve downloads, byte for byte");
  }

  // A saved query with a bad name: the refusal names the field.
  await page.click("a[data-nav=queries]");
  await page.waitForSelector("#new");
  await page.click("#new");
  await page.fill("form#edit-queries input[name=name]", "bad name!");
  await page.fill("form#edit-queries textarea[name=sql]", "SELECT * FROM uptime;");
  await page.click("form#edit-queries button[type=submit]");
  await page.waitForSelector("form#edit-queries [data-error-for=name]:not(:empty)");
  check(true, "an invalid query name is refused next to the name field");
  await page.fill("form#edit-queries input[name=name]", "uptime_now");
  await page.click("form#edit-queries button[type=submit]");
  await page.waitForSelector('table#queries tr[data-key="uptime_now"]');
  check(true, "a saved query is created from the console");
  await shot(page, "queries");
  for (const [nav, sel, name] of [["labels", "table#label-configs", "labels"], ["rules", "table#rules", "rules"], ["alerts", "table#alerts", "alerts"]]) {
    await page.click(`a[data-nav=${nav}]`);
    await page.waitForSelector(sel);
    await shot(page, name);
  }
  check(true, "the labels, rules and alerts pages open");
  check((await page.locator("a[data-nav=admin]").isHidden()), "an operator is not offered the admin pages");

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
    await page.click("a[data-nav=schedules]");
    await page.waitForSelector("table#schedules");
    const writes = await page.locator("#new, table#schedules button").count();
    check(writes === 0, `an observer is offered no controls to change schedules (${writes})`);
    const forcedEdit = await page.evaluate(async (name) => {
      const token = document.cookie.match(/gatehouse_csrf=([^;]*)/)[1];
      const r = await fetch(`/api/v1/schedules/${name}`, {
        method: "PUT",
        headers: { "content-type": "application/json", "x-csrf-token": token },
        body: JSON.stringify({ query: "uptime", interval: 60, labels: ["all"] }),
      });
      return r.status;
    }, schedule || "uptime");
    check(forcedEdit === 403, `an observer forcing a schedule change gets 403 (${forcedEdit})`);
    await page.click("#sign-out");
    await page.waitForSelector("form#sign-in");
  }
  // An admin: users, tokens, enroll secrets, dead letters, destinations,
  // and the audit log filtered to what the operator changed.
  const adminUser = env("ADMIN_USER", "");
  if (adminUser) {
    await page.fill("form#sign-in input[name=name]", adminUser);
    await page.fill("form#sign-in input[name=password]", env("ADMIN_PASSWORD"));
    await page.click("form#sign-in button[type=submit]");
    await page.waitForSelector("[data-stat=hosts] .value");
    await page.click("a[data-nav=admin]");
    await page.waitForSelector("table#users");
    check((await page.textContent("table#users")).includes(user), "the admin sees the users");
    await shot(page, "users");
    await page.click("nav.tabs a:text('API tokens')");
    await page.waitForSelector("form#new-token");
    await page.fill("form#new-token input[name=user]", user);
    await page.fill("form#new-token input[name=description]", "from the console");
    await page.click("form#new-token button[type=submit]");
    await page.waitForSelector("#shown-once code");
    check((await page.textContent("#shown-once code")).length >= 20, "a new API token is shown once");
    await shot(page, "tokens");
    for (const [tab, sel, name] of [["Enroll secrets", "table#secrets", "enroll-secrets"], ["Dead letters", "table#dead-letters", "dead-letters"], ["Log destinations", "table#destinations", "destinations"]]) {
      await page.click(`nav.tabs a:text('${tab}')`);
      await page.waitForSelector(sel);
      await shot(page, name);
    }
    await page.goto(`${url}/#/admin/audit?actor=${encodeURIComponent(user)}&action=schedule`);
    await page.waitForSelector("table#audit");
    const actions = await page.locator("table#audit tbody tr td:nth-child(3)").allTextContents();
    check(actions.length > 0 && actions.every((a) => a.startsWith("schedule.")), `the audit log filters to the operator's schedule changes (${actions.join(", ")})`);
    await shot(page, "audit");
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
