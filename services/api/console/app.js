// The Gatehouse console: a client of the public REST API and nothing
// else (whatever it does, a script can do). A person signs in with a
// password; the session is an HttpOnly cookie the page cannot read, and
// every change carries the session's CSRF token (the gatehouse_csrf
// cookie) in x-csrf-token. Pages are routed by the URL fragment.
"use strict";

const main = document.getElementById("main");
const topBar = document.getElementById("top");
const PAGE = 50;

/** The session's CSRF token, from its readable cookie. */
function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)gatehouse_csrf=([^;]*)/);
  return m ? m[1] : "";
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API; a 401 sends the person to sign in. */
async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = csrf();
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    if (r.status === 401 && !path.startsWith("/api/v1/session")) {
      go("#/sign-in");
    }
    throw new ApiError(r.status, (data && data.error) || r.statusText);
  }
  return data;
}

/** An element with attributes and children (text is never parsed as HTML). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function go(hash) {
  if (location.hash !== hash) location.hash = hash;
  else route();
}

function when(ms) {
  if (!ms) return "never";
  const ago = Math.max(0, Date.now() - ms) / 1000;
  if (ago < 90) return `${Math.round(ago)} s ago`;
  if (ago < 5400) return `${Math.round(ago / 60)} min ago`;
  if (ago < 172800) return `${Math.round(ago / 3600)} h ago`;
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

let me = null;

async function whoami() {
  me = await api("GET", "/api/v1/whoami");
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  topBar.hidden = false;
}

function signInPage() {
  topBar.hidden = true;
  me = null;
  const error = el("p", { class: "error", role: "alert" });
  const form = el(
    "form",
    { class: "card sign-in", id: "sign-in" },
    el("h1", {}, "Sign in to Gatehouse"),
    el("label", {}, "User name", el("input", { name: "name", autocomplete: "username", required: true })),
    el("label", {}, "Password", el("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    el("button", { type: "submit" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    error.textContent = "";
    try {
      await api("POST", "/api/v1/session", { name: f.get("name"), password: f.get("password") });
      go("#/overview");
    } catch (e) {
      error.textContent = e.message;
    }
  });
  main.replaceChildren(form);
}

function invitePage(invitation) {
  topBar.hidden = true;
  const error = el("p", { class: "error", role: "alert" });
  const form = el(
    "form",
    { class: "card sign-in", id: "invite" },
    el("h1", {}, "Choose your password"),
    el("label", {}, "Password (12 characters or more)", el("input", { name: "password", type: "password", autocomplete: "new-password", minlength: 12, required: true })),
    el("button", { type: "submit" }, "Set password and sign in"),
    error,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      await api("POST", "/api/v1/session/invite", { invitation, password: new FormData(form).get("password") });
      go("#/overview");
    } catch (e) {
      error.textContent = e.message;
    }
  });
  main.replaceChildren(form);
}

/** Hosts: search and filters on the server, a page at a time. */
async function hostsPage(params) {
  const q = new URLSearchParams(params);
  const filters = el(
    "form",
    { class: "filters", id: "host-filters" },
    el("label", {}, "Search", el("input", { name: "search", type: "search", value: q.get("search") || "", placeholder: "hostname, identifier, IP" })),
    el(
      "label",
      {},
      "Platform",
      el(
        "select",
        { name: "platform" },
        ["", "darwin", "linux", "windows", "freebsd"].map((p) =>
          el("option", { value: p, selected: (q.get("platform") || "") === p }, p || "any"),
        ),
      ),
    ),
    el(
      "label",
      {},
      "State",
      el(
        "select",
        { name: "online" },
        [["", "any"], ["true", "online"], ["false", "offline"]].map(([v, t]) =>
          el("option", { value: v, selected: (q.get("online") || "") === v }, t),
        ),
      ),
    ),
    el("label", {}, "Label", el("input", { name: "label", value: q.get("label") || "" })),
    el("button", { type: "submit" }, "Filter"),
  );
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(filters)) if (v) next.set(k, v);
    go(`#/hosts?${next}`);
  });
  const query = new URLSearchParams();
  for (const k of ["search", "platform", "online", "label", "after"]) if (q.get(k)) query.set(k, q.get(k));
  query.set("limit", String(PAGE));
  main.replaceChildren(el("h1", {}, "Hosts"), filters, el("p", { class: "muted" }, "Loading…"));
  const page = await api("GET", `/api/v1/hosts?${query}`);
  const rows = page.items.map((h) =>
    el(
      "tr",
      { dataset: { host: h.id } },
      el("td", {}, el("a", { href: `#/hosts/${encodeURIComponent(h.id)}` }, h.hostname || h.host_identifier || h.id)),
      el("td", {}, h.platform),
      el("td", {}, `${h.os_name} ${h.os_version}`.trim()),
      el("td", {}, h.osquery_version),
      el("td", { class: h.online ? "online" : "offline" }, h.online ? "online" : "offline"),
      el("td", {}, when(h.last_seen)),
      el("td", {}, (h.labels || []).map((l) => el("span", { class: "tag" }, l))),
    ),
  );
  const table = el(
    "table",
    { id: "hosts" },
    el("thead", {}, el("tr", {}, ["Host", "Platform", "OS", "osquery", "State", "Last seen", "Labels"].map((t) => el("th", {}, t)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No host matches."))),
  );
  const pager = el("div", { class: "pager" });
  if (q.get("after")) {
    pager.append(el("button", { type: "button", class: "secondary", onclick: () => history.back() }, "Previous"));
  }
  if (page.next) {
    const nextQ = new URLSearchParams(q);
    nextQ.set("after", page.next);
    pager.append(el("button", { type: "button", id: "next-page", onclick: () => go(`#/hosts?${nextQ}`) }, "Next page"));
  }
  pager.append(el("span", { class: "muted" }, `${page.items.length} shown`));
  main.replaceChildren(el("h1", {}, "Hosts"), filters, table, pager);
}

/** The fleet at a glance: one snapshot from the API, recent alerts. */
async function overviewPage() {
  main.replaceChildren(el("h1", {}, "Overview"), el("p", { class: "muted" }, "Loading…"));
  const [s, alerts] = await Promise.all([
    api("GET", "/api/v1/fleet/summary"),
    api("GET", "/api/v1/alerts?limit=8").catch(() => []),
  ]);
  const hostsLink = (label, query) => el("a", { href: `#/hosts${query ? `?${query}` : ""}` }, label);
  const card = (label, value, query) =>
    el("div", { class: "card stat", dataset: { stat: label } }, el("div", { class: "value" }, String(value)), el("div", { class: "muted" }, query === undefined ? label : hostsLink(label, query)));
  const counts = (title, map, param) => {
    const rows = Object.entries(map).sort((a, b) => b[1] - a[1]);
    return el(
      "div",
      { class: "card" },
      el("h2", {}, title),
      el(
        "table",
        { class: "counts" },
        el("tbody", {}, rows.map(([k, n]) => el("tr", {}, el("td", {}, param ? hostsLink(k, `${param}=${encodeURIComponent(k)}`) : k), el("td", { class: "num" }, String(n))))),
      ),
    );
  };
  const days = Object.entries(s.enrolled_by_day);
  const most = Math.max(1, ...days.map(([, n]) => n));
  const enrollments = el(
    "div",
    { class: "card" },
    el("h2", {}, "First enrollments, last 30 days"),
    days.length
      ? el("div", { class: "bars" }, days.map(([d, n]) => {
          const bar = el("div", { class: "bar", title: `${d}: ${n}` });
          // Through the CSSOM: the policy refuses inline style attributes.
          bar.style.height = `${Math.max(4, (n / most) * 100)}%`;
          return bar;
        }))
      : el("p", { class: "muted" }, "None."),
  );
  const recent = el(
    "div",
    { class: "card" },
    el("h2", {}, "Recent alerts"),
    alerts.length
      ? el("ul", { class: "alerts" }, alerts.map((a) => el("li", {}, el("span", { class: "muted" }, when(a.at)), " ", a.summary)))
      : el("p", { class: "muted" }, "None."),
  );
  main.replaceChildren(
    el("h1", {}, "Overview"),
    el(
      "div",
      { class: "stats" },
      card("hosts", s.hosts, ""),
      card("online", s.online, "online=true"),
      card("offline", s.offline, "online=false"),
      card("silent 7 days", s.silent_7d),
      card("on an older config", s.older_config),
    ),
    el("div", { class: "grid" }, counts("Platforms", s.by_platform, "platform"), counts("osquery versions", s.by_osquery_version), enrollments, recent),
    el("p", { class: "muted" }, `As of ${when(s.at)}; silent for 1 day: ${s.silent_1d}, 30 days: ${s.silent_30d}; config generation ${s.config_generation}.`),
  );
}

/** A CSV field. */
function csvField(v) {
  const t = v === undefined || v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
  return /[",\n\r]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t;
}

/** Offers `text` as a file to download. */
function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

let watching = null;

/** Live query: SQL, targets, rows streaming in as hosts answer. */
function queryPage() {
  const mayRun = me && (me.role === "operator" || me.role === "admin");
  const error = el("p", { class: "error", role: "alert" });
  const form = el(
    "form",
    { class: "card", id: "live-query" },
    el("label", {}, "SQL", el("textarea", { name: "sql", rows: 5, spellcheck: "false", required: true }, "SELECT * FROM osquery_info;")),
    el(
      "div",
      { class: "filters" },
      el(
        "label",
        {},
        "Targets",
        el(
          "select",
          { name: "kind" },
          [["all", "all hosts"], ["labels", "labels"], ["hosts", "hosts"], ["platforms", "platforms"]].map(([v, t]) => el("option", { value: v }, t)),
        ),
      ),
      el("label", {}, "Which (comma-separated)", el("input", { name: "which", placeholder: "e.g. pci, web-01" })),
      el("label", {}, "Wait for offline hosts (s)", el("input", { name: "expires_in", type: "number", min: 10, value: 300 })),
      mayRun ? el("button", { type: "submit", id: "run" }, "Run") : el("p", { class: "muted" }, `Your role (${me ? me.role : "?"}) may not run live queries.`),
    ),
    error,
  );
  const progress = el("p", { id: "progress", class: "muted" });
  const table = el("table", { id: "rows" });
  const done = el("div", { id: "done" });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    if (watching) watching.close();
    const f = new FormData(form);
    const which = String(f.get("which") || "").split(",").map((x) => x.trim()).filter(Boolean);
    const body = { sql: f.get("sql"), expires_in: Number(f.get("expires_in")) || undefined };
    if (f.get("kind") === "all") body.all = true;
    else body[f.get("kind")] = which;
    let c;
    try {
      c = await api("POST", "/api/v1/campaigns", body);
    } catch (e) {
      error.textContent = e.message;
      return;
    }
    const rows = [];
    const columns = ["host"];
    const cancel = el("button", { type: "button", class: "secondary", id: "cancel", onclick: async () => {
      try { await api("DELETE", `/api/v1/campaigns/${encodeURIComponent(c.id)}`); } catch (e) { error.textContent = e.message; }
    } }, "Cancel");
    done.replaceChildren(cancel);
    const head = el("thead");
    const bodyEl = el("tbody");
    table.replaceChildren(head, bodyEl);
    const redrawHead = () => head.replaceChildren(el("tr", {}, columns.map((k) => el("th", {}, k))));
    redrawHead();
    const show = (cov) => {
      const pending = Math.max(0, cov.targeted - cov.answered - cov.failed - cov.expired);
      progress.textContent = `answered ${cov.answered} / targeted ${cov.targeted}, failed ${cov.failed}, pending ${pending}`;
    };
    show(c.coverage);
    const es = new EventSource(`/api/v1/campaigns/${encodeURIComponent(c.id)}/events`);
    watching = es;
    es.addEventListener("result", (m) => {
      const r = JSON.parse(m.data).result;
      const hostRows = r.rows.length ? r.rows : [{}];
      let grew = false;
      for (const row of hostRows) {
        for (const k of Object.keys(row)) if (!columns.includes(k)) { columns.push(k); grew = true; }
        const full = { host: r.host_id, ...row };
        if (r.status !== 0) full.error = r.message;
        rows.push(full);
        bodyEl.append(el("tr", { class: r.status === 0 ? "" : "error" }, columns.map((k) => el("td", {}, full[k] ?? ""))));
      }
      if (grew) {
        redrawHead();
        bodyEl.replaceChildren(...rows.map((row) => el("tr", {}, columns.map((k) => el("td", {}, row[k] ?? "")))));
      }
    });
    es.addEventListener("progress", (m) => show(JSON.parse(m.data).coverage));
    es.addEventListener("done", (m) => {
      const d = JSON.parse(m.data);
      show(d.coverage);
      es.close();
      watching = null;
      const csv = () => [columns.join(","), ...rows.map((r) => columns.map((k) => csvField(r[k])).join(","))].join("\n") + "\n";
      done.replaceChildren(
        el("p", { id: "finished" }, d.expired ? "Expired." : "Every targeted host answered or failed."),
        d.non_responders.length ? el("p", {}, "Did not answer: ", d.non_responders.map((h) => el("span", { class: "tag" }, h))) : null,
        el("button", { type: "button", id: "export-csv", onclick: () => download(`campaign-${c.id}.csv`, "text/csv", csv()) }, "Export CSV"),
        " ",
        el("button", { type: "button", class: "secondary", id: "export-json", onclick: () => download(`campaign-${c.id}.json`, "application/json", JSON.stringify(rows, null, 2)) }, "Export JSON"),
      );
    });
  });
  main.replaceChildren(el("h1", {}, "Live query"), form, progress, table, done);
}

async function hostPage(id) {
  const h = await api("GET", `/api/v1/hosts/${encodeURIComponent(id)}`);
  const facts = [
    ["Host id", h.id],
    ["Hostname", h.hostname],
    ["Host identifier", h.host_identifier],
    ["Platform", h.platform],
    ["OS", `${h.os_name} ${h.os_version}`],
    ["osquery", h.osquery_version],
    ["State", h.online ? "online" : "offline"],
    ["Last seen", when(h.last_seen)],
    ["Last IP", h.last_ip],
    ["Enrolled", when(h.enrolled_at)],
  ];
  main.replaceChildren(
    el("h1", {}, h.hostname || h.id),
    el(
      "div",
      { class: "card" },
      el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v || "—")])),
      el("p", {}, "Labels: ", (h.label_set || []).map((l) => el("span", { class: "tag" }, l))),
    ),
  );
}

async function route() {
  if (watching) {
    watching.close();
    watching = null;
  }
  const [path, query] = (location.hash.slice(1) || "/overview").split("?");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === parts[0]);
  }
  try {
    if (parts[0] === "sign-in") return signInPage();
    if (parts[0] === "invite" && parts[1]) return invitePage(decodeURIComponent(parts[1]));
    if (!me) await whoami();
    if (parts[0] === "hosts" && parts[1]) return await hostPage(decodeURIComponent(parts[1]));
    if (parts[0] === "hosts") return await hostsPage(query || "");
    if (parts[0] === "query") return queryPage();
    return await overviewPage();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    main.replaceChildren(el("p", { class: "error", role: "alert" }, e.message));
  }
}

document.getElementById("sign-out").addEventListener("click", async () => {
  try {
    await api("DELETE", "/api/v1/session");
  } finally {
    go("#/sign-in");
  }
});
window.addEventListener("hashchange", route);
route();
