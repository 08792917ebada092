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
  constructor(status, message, field) {
    super(message);
    this.status = status;
    /** The input field the API says is wrong, when it names one. */
    this.field = field;
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
    throw new ApiError(r.status, (data && data.error) || r.statusText, data && data.field);
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
  for (const c of children.flat(Infinity)) {
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

const enc = encodeURIComponent;

let me = null;

const RANKS = { observer: 0, operator: 1, admin: 2 };

/** Whether the signed-in person's role is at least `role`. */
function can(role) {
  return !!me && RANKS[me.role] >= RANKS[role];
}

async function whoami() {
  me = await api("GET", "/api/v1/whoami");
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  for (const a of document.querySelectorAll("[data-role]")) a.hidden = !can(a.dataset.role);
  topBar.hidden = false;
}

function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

/** A table with a header row; `rows` are arrays of cells (or <tr>s). */
function table(id, headers, rows, empty) {
  const body = rows.length
    ? rows.map((r) => (r instanceof Node ? r : el("tr", {}, r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))))))
    : [el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, empty || "None."))];
  return el("table", { id }, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, body));
}

function pageHead(title, ...actions) {
  return el("div", { class: "page-head" }, el("h1", {}, title), el("div", { class: "actions" }, actions));
}

function button(text, onclick, attrs) {
  return el("button", { type: "button", ...(attrs || {}), onclick }, text);
}

/** Runs a change; its failure is shown in `where`. */
async function act(where, fn) {
  where.textContent = "";
  try {
    await fn();
  } catch (e) {
    where.textContent = e.message;
  }
}

// ---- forms: one field per input, the API's errors next to the field ----

/**
 * A form field. `f`: { name, label, kind: text | textarea | number |
 * checkbox | list | json | select | password, options, hint, required,
 * placeholder, readonly }.
 */
function field(f, value) {
  let input;
  const common = { name: f.name, id: `f-${f.name}`, required: f.required, placeholder: f.placeholder, readonly: f.readonly };
  if (f.kind === "textarea" || f.kind === "json" || f.kind === "sql") {
    const text = f.kind === "json" ? (value === undefined ? (f.empty ?? "") : JSON.stringify(value, null, 2)) : value ?? "";
    input = el("textarea", { ...common, rows: f.rows || (f.kind === "json" ? 6 : 4), spellcheck: "false", class: f.kind === "textarea" ? "" : "code" }, text);
  } else if (f.kind === "checkbox") {
    input = el("input", { ...common, type: "checkbox", checked: value === undefined ? !!f.default : !!value });
  } else if (f.kind === "select") {
    input = el("select", common, f.options.map(([v, t]) => el("option", { value: v, selected: String(value ?? f.default ?? "") === v }, t)));
  } else {
    const v = f.kind === "list" ? (value || []).join(", ") : value ?? "";
    input = el("input", { ...common, type: f.kind === "number" ? "number" : f.kind === "password" ? "password" : "text", value: v, min: f.min, max: f.max });
  }
  const cls = f.kind === "checkbox" ? "field check" : "field";
  return el(
    "div",
    { class: cls, dataset: { field: f.name } },
    el("label", { for: `f-${f.name}` }, f.label),
    input,
    f.hint ? el("small", { class: "muted" }, f.hint) : null,
    el("p", { class: "field-error", role: "alert", dataset: { errorFor: f.name } }),
  );
}

/** The request body a form's fields make; a field that cannot be read throws. */
function formBody(form, fields) {
  const body = {};
  for (const f of fields) {
    if (f.readonly || f.path) continue;
    const input = form.elements.namedItem(f.name);
    if (f.kind === "checkbox") {
      body[f.name] = input.checked;
      continue;
    }
    const raw = input.value.trim();
    if (raw === "") {
      if (f.kind === "list") body[f.name] = [];
      continue;
    }
    if (f.kind === "number") body[f.name] = Number(raw);
    else if (f.kind === "list") body[f.name] = raw.split(",").map((x) => x.trim()).filter(Boolean);
    else if (f.kind === "json") {
      try {
        body[f.name] = JSON.parse(raw);
      } catch (e) {
        throw new ApiError(400, `not valid JSON: ${e.message}`, f.name);
      }
    } else body[f.name] = input.value;
  }
  return body;
}

/** Shows an error next to its field, or under the form. */
function showError(form, e) {
  const slot = e.field && form.querySelector(`[data-error-for="${CSS.escape(e.field)}"]`);
  const general = form.querySelector(".form-error");
  if (slot) {
    slot.textContent = e.message;
    slot.closest(".field").classList.add("invalid");
    const input = slot.closest(".field").querySelector("input, textarea, select");
    if (input) input.focus();
  } else {
    general.textContent = e.message;
  }
}

function clearErrors(form) {
  for (const p of form.querySelectorAll(".field-error, .form-error")) p.textContent = "";
  for (const d of form.querySelectorAll(".field.invalid")) d.classList.remove("invalid");
}

/** A form for `fields`; `save(body, form)` is called on submit (an `inline`
 * form sits on a list page: no Cancel). */
function editForm(id, fields, item, save, submitText, inline) {
  const form = el(
    "form",
    { class: "card edit", id, novalidate: true },
    fields.map((f) => field(f, item ? item[f.name] : undefined)),
    el("p", { class: "form-error error", role: "alert" }),
    el("div", { class: "actions" }, el("button", { type: "submit" }, submitText || "Save"), inline ? null : button("Cancel", () => history.back(), { class: "secondary" })),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    try {
      await save(formBody(form, fields), form);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      showError(form, e);
    }
  });
  return form;
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

/** Hosts picked on the hosts page for a live query (kept across pages). */
const picked = new Set();

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
        ["", "darwin", "linux", "windows", "freebsd"].map((p) => el("option", { value: p, selected: (q.get("platform") || "") === p }, p || "any")),
      ),
    ),
    el(
      "label",
      {},
      "State",
      el(
        "select",
        { name: "online" },
        [["", "any"], ["true", "online"], ["false", "offline"]].map(([v, t]) => el("option", { value: v, selected: (q.get("online") || "") === v }, t)),
      ),
    ),
    el(
      "label",
      {},
      "Last seen",
      el(
        "select",
        { name: "seen" },
        [["", "any time"], ["1h", "in the last hour"], ["1d", "in the last day"], ["silent1d", "not for 1 day"], ["silent7d", "not for 7 days"], ["silent30d", "not for 30 days"]].map(([v, t]) =>
          el("option", { value: v, selected: (q.get("seen") || "") === v }, t),
        ),
      ),
    ),
    el("label", {}, "Label", el("input", { name: "label", value: q.get("label") || "" })),
    el("label", {}, "Sort", el("select", { name: "sort" }, [["", "host id"], ["hostname", "hostname"], ["last_seen", "last seen"]].map(([v, t]) => el("option", { value: v, selected: (q.get("sort") || "") === v }, t)))),
    el("button", { type: "submit" }, "Filter"),
  );
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(filters)) if (v) next.set(k, v);
    go(`#/hosts?${next}`);
  });
  const query = new URLSearchParams();
  for (const k of ["search", "platform", "online", "label", "after", "sort"]) if (q.get(k)) query.set(k, q.get(k));
  const hour = 3600 * 1000;
  const seen = { "1h": ["seen_after", hour], "1d": ["seen_after", 24 * hour], silent1d: ["seen_before", 24 * hour], silent7d: ["seen_before", 7 * 24 * hour], silent30d: ["seen_before", 30 * 24 * hour] }[q.get("seen")];
  if (seen) query.set(seen[0], String(Date.now() - seen[1]));
  query.set("limit", String(PAGE));
  main.replaceChildren(el("h1", {}, "Hosts"), filters, el("p", { class: "muted" }, "Loading…"));
  const page = await api("GET", `/api/v1/hosts?${query}`);
  const mayQuery = can("operator");
  const pickedNote = el("span", { class: "muted", id: "picked" });
  const showPicked = () => {
    pickedNote.textContent = picked.size ? `${picked.size} picked` : "";
    runPicked.disabled = picked.size === 0;
  };
  const runPicked = button("Query picked hosts", () => go(`#/query?hosts=${enc([...picked].join(","))}`), { id: "query-picked" });
  const rows = page.items.map((h) =>
    el(
      "tr",
      { dataset: { host: h.id } },
      mayQuery
        ? el("td", {}, el("input", { type: "checkbox", "aria-label": `pick ${h.hostname || h.id}`, checked: picked.has(h.id), onchange: (ev) => {
            if (ev.target.checked) picked.add(h.id);
            else picked.delete(h.id);
            showPicked();
          } }))
        : null,
      el("td", {}, el("a", { href: `#/hosts/${enc(h.id)}` }, h.hostname || h.host_identifier || h.id)),
      el("td", {}, h.platform),
      el("td", {}, `${h.os_name} ${h.os_version}`.trim()),
      el("td", {}, h.osquery_version),
      el("td", { class: h.online ? "online" : "offline" }, h.online ? "online" : "offline"),
      el("td", {}, when(h.last_seen)),
      el("td", {}, (h.label_set || h.labels || []).filter((l) => l !== "all").map((l) => el("a", { class: "tag", href: `#/hosts?label=${enc(l)}` }, l))),
    ),
  );
  const headers = [...(mayQuery ? [""] : []), "Host", "Platform", "OS", "osquery", "State", "Last seen", "Labels"];
  const t = table("hosts", headers, rows, "No host matches.");
  const pager = el("div", { class: "pager" });
  if (q.get("after")) pager.append(button("Previous", () => history.back(), { class: "secondary" }));
  if (page.next) {
    const nextQ = new URLSearchParams(q);
    nextQ.set("after", page.next);
    pager.append(button("Next page", () => go(`#/hosts?${nextQ}`), { id: "next-page" }));
  }
  pager.append(el("span", { class: "muted" }, `${page.items.length} shown`));
  if (mayQuery) pager.append(runPicked, pickedNote);
  showPicked();
  main.replaceChildren(el("h1", {}, "Hosts"), filters, t, pager);
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

/** Hostnames by host id, looked up for the first hosts a page shows. */
const hostNames = new Map();
const LOOKUPS = 200;

/** A link to a host, showing its hostname once known. */
function hostLink(id, cls) {
  const a = el("a", { href: `#/hosts/${enc(id)}`, class: cls, title: id }, id);
  if (!hostNames.has(id) && hostNames.size < LOOKUPS) {
    hostNames.set(id, api("GET", `/api/v1/hosts/${enc(id)}`).then((h) => h.hostname || id, () => id));
  }
  const known = hostNames.get(id);
  if (typeof known === "string") a.textContent = known;
  else if (known) {
    known.then((name) => {
      hostNames.set(id, name);
      a.textContent = name;
    });
  }
  return a;
}

// ---- SQL completion from osquery's table specs (names and types) ----

let schema = null;

async function osquerySchema() {
  if (!schema) {
    const r = await fetch("/console/osquery-schema.json");
    schema = (await r.json()).tables;
  }
  return schema;
}

const SQL_WORDS = ["SELECT", "FROM", "WHERE", "JOIN", "LEFT JOIN", "ON", "AND", "OR", "NOT", "LIKE", "IN", "GROUP BY", "ORDER BY", "LIMIT", "AS", "DISTINCT", "COUNT", "UNION"];

/** The tables a statement reads, by name and by alias. */
function tablesIn(sql, tables) {
  const found = {};
  const re = /\b(?:from|join)\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+(?:as\s+)?([A-Za-z_][A-Za-z0-9_]*))?/gi;
  for (const m of sql.matchAll(re)) {
    const t = m[1].toLowerCase();
    if (!tables[t]) continue;
    found[t] = t;
    const alias = m[2] && m[2].toLowerCase();
    if (alias && !["where", "join", "left", "inner", "on", "group", "order", "limit", "using", "cross"].includes(alias)) found[alias] = t;
  }
  return found;
}

/** What completes the word before the caret: [{ text, note }]. */
function completions(sql, caret, tables) {
  const before = sql.slice(0, caret);
  const word = before.match(/[A-Za-z0-9_.]*$/)[0];
  const prefix = word.includes(".") ? word.slice(word.lastIndexOf(".") + 1) : word;
  const lower = prefix.toLowerCase();
  const out = [];
  const add = (text, note) => {
    if (text.toLowerCase().startsWith(lower) && text.toLowerCase() !== lower && !out.some((o) => o.text === text)) out.push({ text, note });
  };
  const used = tablesIn(sql, tables);
  if (word.includes(".")) {
    const t = used[word.slice(0, word.indexOf(".")).toLowerCase()];
    if (t) for (const [c, type] of tables[t].columns) add(c, `${type} · ${t}`);
    return { prefix, items: out };
  }
  if (!prefix) return { prefix, items: [] };
  const prev = before.slice(0, before.length - word.length).trimEnd().split(/\s+/).pop().toLowerCase();
  if (prev === "from" || prev === "join") {
    for (const [t, d] of Object.entries(tables)) add(t, d.platforms.join(", "));
    return { prefix, items: out };
  }
  for (const t of new Set(Object.values(used))) for (const [c, type] of tables[t].columns) add(c, `${type} · ${t}`);
  for (const k of SQL_WORDS) add(k, "keyword");
  for (const [t, d] of Object.entries(tables)) add(t, `table · ${d.platforms.join(", ")}`);
  return { prefix, items: out };
}

/** Adds osquery table and column completion to a textarea. */
function completeSql(textarea) {
  const list = el("ul", { class: "completions", id: "completions", role: "listbox", hidden: true });
  let items = [];
  let prefix = "";
  let at = 0;
  const close = () => {
    list.hidden = true;
    items = [];
  };
  const accept = (i) => {
    const it = items[i];
    if (!it) return;
    const pos = textarea.selectionStart;
    const v = textarea.value;
    textarea.value = v.slice(0, pos - prefix.length) + it.text + v.slice(pos);
    const caret = pos - prefix.length + it.text.length;
    textarea.setSelectionRange(caret, caret);
    close();
    textarea.focus();
  };
  const render = () => {
    list.replaceChildren(
      ...items.map((it, i) =>
        el("li", { role: "option", class: i === at ? "active" : "", "aria-selected": i === at ? "true" : "false", onmousedown: (ev) => {
          ev.preventDefault();
          accept(i);
        } }, el("span", { class: "name" }, it.text), el("span", { class: "muted" }, it.note)),
      ),
    );
    list.hidden = items.length === 0;
  };
  const update = async () => {
    const tables = await osquerySchema();
    const c = completions(textarea.value, textarea.selectionStart, tables);
    prefix = c.prefix;
    items = c.items.slice(0, 12);
    at = 0;
    render();
  };
  textarea.addEventListener("input", update);
  textarea.addEventListener("blur", close);
  textarea.addEventListener("keydown", (ev) => {
    if (list.hidden) return;
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      at = (at + (ev.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      render();
    } else if (ev.key === "Tab" || ev.key === "Enter") {
      ev.preventDefault();
      accept(at);
    } else if (ev.key === "Escape") {
      close();
    }
  });
  return el("div", { class: "sql-box" }, textarea, list);
}

/** The target fields of a live query form, as the API's request. */
function targetsOf(form) {
  const f = new FormData(form);
  const which = String(f.get("which") || "").split(",").map((x) => x.trim()).filter(Boolean);
  const t = {};
  if (f.get("kind") === "all") t.all = true;
  else t[f.get("kind")] = which;
  return t;
}

/** Live query: SQL, targets, rows streaming in as hosts answer. */
function queryPage(params) {
  const q = new URLSearchParams(params);
  const mayRun = can("operator");
  const error = el("p", { class: "error form-error", role: "alert" });
  const preset = q.get("hosts") ? ["hosts", q.get("hosts")] : q.get("labels") ? ["labels", q.get("labels")] : ["all", ""];
  const sql = el("textarea", { name: "sql", id: "f-sql", rows: 5, spellcheck: "false", required: true, class: "code", autocomplete: "off" }, q.get("sql") || "SELECT * FROM osquery_info;");
  const count = el("span", { id: "target-count", class: "muted" });
  const form = el(
    "form",
    { class: "card", id: "live-query" },
    el("div", { class: "field" }, el("label", { for: "f-sql" }, "SQL (Tab completes osquery tables and columns)"), completeSql(sql), el("p", { class: "field-error", dataset: { errorFor: "sql" } })),
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
          [["all", "all hosts"], ["labels", "labels"], ["hosts", "hosts"], ["platforms", "platforms"]].map(([v, t]) => el("option", { value: v, selected: v === preset[0] }, t)),
        ),
      ),
      el("label", {}, "Which (comma-separated)", el("input", { name: "which", value: preset[1], placeholder: "e.g. pci, web-01, linux" })),
      el("label", {}, "Wait for offline hosts (s)", el("input", { name: "expires_in", type: "number", min: 10, value: 300 })),
      mayRun ? el("button", { type: "submit", id: "run" }, "Run") : el("p", { class: "muted" }, `Your role (${me ? me.role : "?"}) may not run live queries.`),
      count,
    ),
    error,
  );
  let counting = 0;
  const recount = async () => {
    const n = ++counting;
    try {
      const t = new URLSearchParams();
      for (const [k, v] of Object.entries(targetsOf(form))) t.set(k, Array.isArray(v) ? v.join(",") : String(v));
      const c = await api("GET", `/api/v1/campaigns/targets?${t}`);
      if (n !== counting) return;
      count.className = c.count > c.limit ? "error" : "muted";
      count.textContent = `${c.count} host${c.count === 1 ? "" : "s"} targeted${c.count > c.limit ? ` (over the limit of ${c.limit})` : ""}`;
    } catch (e) {
      if (n === counting) {
        count.className = "error";
        count.textContent = e.message;
      }
    }
  };
  let timer = null;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(recount, 250);
  };
  form.elements.namedItem("kind").addEventListener("change", recount);
  form.elements.namedItem("which").addEventListener("input", soon);
  recount();
  const progress = el("p", { id: "progress", class: "muted" });
  const rowsTable = el("table", { id: "rows" });
  const done = el("div", { id: "done" });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    if (watching) watching.close();
    const f = new FormData(form);
    const body = { sql: f.get("sql"), expires_in: Number(f.get("expires_in")) || undefined, ...targetsOf(form) };
    let c;
    try {
      c = await api("POST", "/api/v1/campaigns", body);
    } catch (e) {
      showError(form, e);
      return;
    }
    const rows = [];
    const columns = ["host"];
    const cancel = button("Cancel", () => act(error, () => api("DELETE", `/api/v1/campaigns/${enc(c.id)}`)), { class: "secondary", id: "cancel" });
    done.replaceChildren(cancel);
    const head = el("thead");
    const bodyEl = el("tbody");
    rowsTable.replaceChildren(head, bodyEl);
    const redrawHead = () => head.replaceChildren(el("tr", {}, columns.map((k) => el("th", {}, k))));
    redrawHead();
    const show = (cov) => {
      const pending = Math.max(0, cov.targeted - cov.answered - cov.failed - cov.expired);
      progress.textContent = `answered ${cov.answered} / targeted ${cov.targeted}, failed ${cov.failed}, pending ${pending}`;
    };
    show(c.coverage);
    const es = new EventSource(`/api/v1/campaigns/${enc(c.id)}/events`);
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
        bodyEl.append(el("tr", { class: r.status === 0 ? "" : "error" }, columns.map((k) => el("td", {}, k === "host" ? hostLink(full.host) : full[k] ?? ""))));
      }
      if (r.status !== 0 && !columns.includes("error")) { columns.push("error"); grew = true; }
      if (grew) {
        redrawHead();
        bodyEl.replaceChildren(...rows.map((row) => el("tr", { class: row.error ? "error" : "" }, columns.map((k) => el("td", {}, k === "host" ? hostLink(row.host) : row[k] ?? "")))));
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
        ...(d.non_responders.length ? [el("p", {}, "Did not answer: ", d.non_responders.map((h) => hostLink(h, "tag")))] : []),
        button("Export CSV", () => download(`campaign-${c.id}.csv`, "text/csv", csv()), { id: "export-csv" }),
        " ",
        button("Export JSON", () => download(`campaign-${c.id}.json`, "application/json", JSON.stringify(rows, null, 2)), { class: "secondary", id: "export-json" }),
      );
    });
  });
  main.replaceChildren(el("h1", {}, "Live query"), form, progress, rowsTable, done);
}
const SEVERITY = ["info", "warning", "error", "fatal"];

/** One host: details, labels, its config, results, status logs, live queries. */
async function hostPage(id) {
  const h = await api("GET", `/api/v1/hosts/${enc(id)}`);
  const hid = enc(h.id);
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
    ["Enrolled", `${when(h.enrolled_at)} (${h.enroll_count} enrollment${h.enroll_count === 1 ? "" : "s"})`],
    ["Config generation", String(h.config_generation)],
    ["Key epoch", `${h.key_epoch}${h.key_revoked ? " (revoked: the host must enroll again)" : ""}`],
  ];
  const problem = el("p", { class: "error", role: "alert" });
  const actions = [];
  if (can("operator")) actions.push(button("Live query", () => go(`#/query?hosts=${hid}`), { class: "secondary" }));
  if (can("admin")) {
    actions.push(
      button("Rotate key", () => act(problem, async () => {
        if (!confirm("Revoke this host's node key? It enrolls again with its enroll secret.")) return;
        await api("POST", `/api/v1/hosts/${hid}/rotate_key`, {});
        route();
      }), { class: "secondary", id: "rotate-key" }),
      button("Delete", () => act(problem, async () => {
        if (!confirm(`Delete host ${h.hostname || h.id}? Its records go; an agent still running enrolls again.`)) return;
        await api("DELETE", `/api/v1/hosts/${hid}`);
        go("#/hosts");
      }), { class: "danger", id: "delete-host" }),
    );
  }
  // Labels: the operator's own are editable; the others come from
  // enrollment, the platform and label queries.
  const labelsForm = el("form", { id: "host-labels", class: "inline" });
  const derived = (h.label_set || []).filter((l) => !(h.labels || []).includes(l));
  labelsForm.append(
    el("div", {}, el("strong", {}, "Labels set by operators: "), can("operator") ? null : (h.labels || []).map((l) => el("span", { class: "tag" }, l))),
    can("operator")
      ? el("div", { class: "filters" }, el("input", { name: "labels", value: (h.labels || []).join(", "), "aria-label": "labels", size: 40 }), el("button", { type: "submit" }, "Save labels"))
      : null,
    el("p", { class: "field-error", dataset: { errorFor: "labels" } }),
    el("div", {}, el("strong", {}, "Also: "), derived.map((l) => el("a", { class: "tag", href: `#/hosts?label=${enc(l)}` }, l))),
  );
  labelsForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(labelsForm);
    const labels = labelsForm.elements.namedItem("labels").value.split(",").map((x) => x.trim()).filter(Boolean);
    try {
      await api("PUT", `/api/v1/hosts/${hid}/labels`, { labels });
      route();
    } catch (e) {
      labelsForm.querySelector("[data-error-for]").textContent = e.message;
    }
  });
  const section = (title, idAttr, body) => el("section", { class: "card", id: idAttr }, el("h2", {}, title), body);
  const config = el("pre", { class: "code", id: "host-config" }, "Loading…");
  const results = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  const status = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  const asked = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(
    pageHead(h.hostname || h.id, ...actions),
    problem,
    el("div", { class: "card" }, el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v || "—")])), labelsForm),
    section("Recent results, per scheduled query", "host-results", results),
    section("Status logs, last 24 hours", "host-status", status),
    section("Live queries it was asked", "host-campaigns", asked),
    section("The config it gets", "host-config-section", config),
  );
  const day = 24 * 3600 * 1000;
  await Promise.all([
    api("GET", `/api/v1/hosts/${hid}/config`).then((c) => { config.textContent = JSON.stringify(c, null, 2); }, (e) => { config.textContent = e.message; }),
    api("GET", `/api/v1/results?host=${hid}&order=newest&limit=200`).then((page) => {
      const latest = new Map();
      for (const r of page.items) if (!latest.has(r.name)) latest.set(r.name, r);
      results.replaceChildren(
        latest.size
          ? table("results", ["Query", "At", "Kind", "Rows", "First rows"], [...latest.values()].map((r) => [
              el("a", { href: `#/results?host=${hid}&name=${enc(r.name)}` }, r.name),
              when(r.unix_time * 1000),
              r.action ? `${r.kind} (${r.action})` : r.kind,
              String(r.rows),
              el("details", {}, el("summary", {}, "show"), el("pre", { class: "code" }, JSON.stringify(r.line, null, 2))),
            ]))
          : el("p", { class: "muted" }, "No results stored for this host."),
      );
    }, (e) => results.replaceChildren(el("p", { class: "error" }, e.message))),
    api("GET", `/api/v1/hosts/${hid}/status_logs?since=${Date.now() - day}&limit=500`).then((logs) => {
      status.replaceChildren(
        table("status-logs", ["At", "Severity", "Message"], logs.slice().reverse().map((l) =>
          el("tr", { class: l.severity >= 2 ? "error" : l.severity === 1 ? "warn" : "" }, el("td", {}, when(l.unix_time * 1000)), el("td", {}, SEVERITY[l.severity] || String(l.severity)), el("td", {}, l.message)),
        ), "No status logs in the last 24 hours."),
      );
    }, (e) => status.replaceChildren(el("p", { class: "error" }, e.message))),
    api("GET", `/api/v1/hosts/${hid}/campaigns?limit=20`).then((page) => {
      asked.replaceChildren(
        table("host-live-queries", ["Asked", "By", "SQL", "State", "Answer"], page.items.map((i) => {
          const r = i.result;
          const answer = !r ? "—" : r.status !== 0 ? el("span", { class: "error" }, r.message || `status ${r.status}`) : el("details", {}, el("summary", {}, `${r.rows.length} row${r.rows.length === 1 ? "" : "s"}`), el("pre", { class: "code" }, JSON.stringify(r.rows, null, 2)));
          return [when(i.campaign.created_at), i.campaign.created_by, el("code", {}, i.campaign.sql), i.delivery.state, answer];
        }), "No live query asked this host among the recent ones."),
        ...(page.next_before_id ? [el("p", { class: "muted" }, `Looked at the ${page.scanned} most recent live queries.`)] : []),
      );
    }, (e) => asked.replaceChildren(el("p", { class: "error" }, e.message))),
  ]);
}

/** Stored results of one scheduled query (on one host, or all), newest first. */
async function resultsPage(params) {
  const q = new URLSearchParams(params);
  const query = new URLSearchParams({ order: "newest", limit: "100" });
  for (const k of ["host", "name", "after"]) if (q.get(k)) query.set(k, q.get(k));
  const page = await api("GET", `/api/v1/results?${query}`);
  const rows = page.items.map((r) => [
    when(r.unix_time * 1000),
    el("a", { href: `#/hosts/${enc(r.host_id)}` }, r.host_id),
    r.action ? `${r.kind} (${r.action})` : r.kind,
    el("pre", { class: "code" }, JSON.stringify(r.line.columns || r.line.snapshot || r.line.diffResults || r.line, null, 2)),
  ]);
  const pager = el("div", { class: "pager" });
  if (page.next) {
    const n = new URLSearchParams(q);
    n.set("after", page.next);
    pager.append(button("Older", () => go(`#/results?${n}`), { id: "next-page" }));
  }
  main.replaceChildren(pageHead(`Results of ${q.get("name") || "every query"}`), table("results", ["At", "Host", "Kind", "Line"], rows, "No results."), pager);
}
// ---- definitions: one generic list and editor per resource ----

const PLATFORM_CHOICES = [["", "any"], ["darwin", "darwin"], ["linux", "linux"], ["windows", "windows"], ["freebsd", "freebsd"], ["posix", "posix"]];

/**
 * Each resource: its API path, key field, the list's columns, the
 * editor's fields (the key field is part of the URL, not the body) and
 * the least role that may change it.
 */
const RESOURCES = {
  queries: {
    title: "Saved queries",
    one: "query",
    path: "/api/v1/queries",
    key: "name",
    role: "operator",
    columns: [["Name", (q) => q.name], ["SQL", (q) => el("code", {}, q.sql)], ["Description", (q) => q.description], ["Updated", (q) => when(q.updated_at)]],
    extra: (q) => (can("operator") ? button("Run", () => go(`#/query?sql=${enc(q.sql)}`), { class: "secondary" }) : null),
    fields: [
      { name: "name", label: "Name", required: true, key: true },
      { name: "sql", label: "SQL", kind: "sql", required: true },
      { name: "description", label: "Description" },
    ],
  },
  schedules: {
    title: "Schedules and packs",
    one: "schedule",
    path: "/api/v1/schedules",
    key: "name",
    role: "operator",
    sort: (a, b) => (a.pack || "").localeCompare(b.pack || "") || a.name.localeCompare(b.name),
    columns: [
      ["Pack", (s) => s.pack || "—"],
      ["Name", (s) => s.name],
      ["Query", (s) => s.query],
      ["Every", (s) => `${s.interval} s`],
      ["Labels", (s) => s.labels.map((l) => el("span", { class: "tag" }, l))],
      ["Platform", (s) => s.platform || "any"],
      ["Kind", (s) => (s.snapshot ? "snapshot" : s.removed ? "differential" : "differential (added only)")],
      ["Shard", (s) => (s.shard ? `${s.shard} %` : "all")],
    ],
    fields: [
      { name: "name", label: "Name", required: true, key: true, hint: "The name the agent logs results under." },
      { name: "query", label: "Saved query", required: true, hint: "The name of a saved query." },
      { name: "interval", label: "Interval (seconds)", kind: "number", required: true, min: 1, max: 604800 },
      { name: "labels", label: "Labels", kind: "list", required: true, hint: "Hosts with any of these labels run it; \"all\" for every host." },
      { name: "pack", label: "Pack", hint: "Delivered in this pack; empty: the main schedule." },
      { name: "platform", label: "Platform", kind: "select", options: PLATFORM_CHOICES },
      { name: "version", label: "Least osquery version", placeholder: "e.g. 5.0.0" },
      { name: "shard", label: "Shard (% of hosts)", kind: "number", min: 1, max: 100 },
      { name: "snapshot", label: "Snapshot (every row, every time)", kind: "checkbox" },
      { name: "removed", label: "Log removed rows", kind: "checkbox", default: true },
    ],
  },
  "label-configs": {
    title: "Label configs",
    back: "#/labels",
    one: "label config",
    path: "/api/v1/label_configs",
    key: "label",
    role: "operator",
    columns: [
      ["Label", (c) => c.label],
      ["Options", (c) => Object.keys(c.options || {}).join(", ") || "—"],
      ["Decorators", (c) => String((c.decorators.load || []).length + (c.decorators.always || []).length + Object.values(c.decorators.interval || {}).flat().length)],
      ["File paths", (c) => Object.keys(c.file_paths || {}).join(", ") || "—"],
      ["Updated", (c) => when(c.updated_at)],
    ],
    fields: [
      { name: "label", label: "Label", required: true, key: true },
      { name: "options", label: "Options (JSON object of osquery flags)", kind: "json", empty: "{}" },
      { name: "decorators", label: "Decorators (JSON: load, always, interval)", kind: "json", empty: '{"load": [], "always": [], "interval": {}}' },
      { name: "file_paths", label: "File paths (JSON: category to paths)", kind: "json", empty: "{}" },
    ],
  },
  "label-queries": {
    title: "Label queries (dynamic labels)",
    back: "#/labels",
    one: "label query",
    path: "/api/v1/label_queries",
    key: "label",
    role: "operator",
    columns: [["Label", (l) => l.label], ["SQL", (l) => el("code", {}, l.sql)], ["Every", (l) => `${l.interval} s`], ["Platforms", (l) => (l.platforms || []).join(", ") || "all"], ["Description", (l) => l.description]],
    fields: [
      { name: "label", label: "Label", required: true, key: true, hint: "Hosts whose answer has rows carry it." },
      { name: "sql", label: "SQL", kind: "sql", required: true },
      { name: "interval", label: "Interval (seconds, 60 or more)", kind: "number", min: 60 },
      { name: "platforms", label: "Platforms", kind: "list", hint: "darwin, linux, windows, freebsd; empty: all." },
      { name: "description", label: "Description" },
    ],
  },
  rules: {
    title: "Rules",
    one: "rule",
    path: "/api/v1/rules",
    key: "name",
    role: "operator",
    columns: [
      ["Name", (r) => r.name],
      ["When", (r) => r.when.event + (r.when.query ? ` (${r.when.query})` : "")],
      ["Actions", (r) => r.actions.map((a) => a.type).join(", ")],
      ["Enabled", (r) => (r.enabled ? "yes" : "no")],
      ["Description", (r) => r.description],
    ],
    extra: (r) =>
      can("operator")
        ? button(r.enabled ? "Disable" : "Enable", async () => {
            await api("PUT", `/api/v1/rules/${enc(r.name)}/enabled`, { enabled: !r.enabled });
            route();
          }, { class: "secondary" })
        : null,
    fields: [
      { name: "name", label: "Name", required: true, key: true },
      { name: "description", label: "Description" },
      { name: "enabled", label: "Enabled", kind: "checkbox", default: true },
      { name: "when", label: "When (JSON trigger)", kind: "json", rows: 8, empty: '{"event": "results", "query": "", "row_actions": ["added"]}' },
      { name: "actions", label: "Actions (JSON list)", kind: "json", rows: 6, empty: '[{"type": "log"}]' },
      { name: "throttle_secs", label: "At most one alert per host every (seconds)", kind: "number", min: 0 },
    ],
  },
};

async function listPage(kind) {
  const r = RESOURCES[kind];
  let items = await api("GET", r.path);
  if (r.sort) items = items.slice().sort(r.sort);
  const problem = el("p", { class: "error", role: "alert" });
  const write = can(r.role);
  const rows = items.map((it) => {
    const key = it[r.key];
    return el(
      "tr",
      { dataset: { key } },
      r.columns.map(([, f]) => el("td", {}, f(it))),
      el(
        "td",
        { class: "row-actions" },
        r.extra ? r.extra(it) : null,
        write ? button("Edit", () => go(`#/${kind}/edit/${enc(key)}`), { class: "secondary" }) : null,
        write
          ? button("Delete", () => act(problem, async () => {
              if (!confirm(`Delete ${r.one} ${key}?`)) return;
              await api("DELETE", `${r.path}/${enc(key)}`);
              route();
            }), { class: "danger" })
          : null,
      ),
    );
  });
  main.replaceChildren(
    pageHead(r.title, write ? button(`New ${r.one}`, () => go(`#/${kind}/new`), { id: "new" }) : null),
    problem,
    table(kind, [...r.columns.map(([h]) => h), ""], rows, `No ${r.one} yet.`),
  );
}

async function editPage(kind, key) {
  const r = RESOURCES[kind];
  let item;
  if (key !== undefined) {
    item = (await api("GET", r.path)).find((it) => it[r.key] === key);
    if (!item) throw new ApiError(404, `${r.one} ${key} not found`);
  }
  const fields = r.fields.map((f) => (f.key ? { ...f, readonly: key !== undefined, path: true } : f));
  const form = editForm(`edit-${kind}`, fields, item, async (body, f) => {
    const name = key !== undefined ? key : f.elements.namedItem(r.key).value.trim();
    if (!name) throw new ApiError(400, `give the ${r.one} a ${r.key}`, r.key);
    await api("PUT", `${r.path}/${enc(name)}`, body);
    go(r.back || `#/${kind}`);
  });
  const sql = form.querySelector("textarea.code[name=sql]");
  if (sql) sql.replaceWith(completeSql(sql.cloneNode(true)));
  main.replaceChildren(pageHead(key !== undefined ? `Edit ${r.one} ${key}` : `New ${r.one}`), form);
}
// ---- carves ----

async function carvesPage(params) {
  const q = new URLSearchParams(params);
  const query = new URLSearchParams({ limit: String(PAGE) });
  for (const k of ["before_at", "before_id"]) if (q.get(k)) query.set(k, q.get(k));
  const carves = await api("GET", `/api/v1/carves?${query}`);
  const mayDownload = can("operator");
  const rows = carves.map((c) => [
    hostLink(c.host_id),
    c.path || "—",
    bytes(c.carve_size),
    `${c.state}${c.state === "complete" ? "" : ` (${c.blocks_received}/${c.block_count} blocks)`}`,
    when(c.created_at),
    c.sha256 ? el("code", { title: c.sha256 }, c.sha256.slice(0, 12)) : "—",
    c.state === "complete" && mayDownload ? el("a", { class: "button", href: `/api/v1/carves/${enc(c.session_id)}/download`, download: `carve-${c.carve_id || c.session_id}.${c.format === "zstd" ? "tar.zst" : "tar"}`, dataset: { carve: c.session_id } }, "Download") : "",
  ]);
  const pager = el("div", { class: "pager" });
  const last = carves[carves.length - 1];
  if (carves.length === PAGE && last) pager.append(button("Older", () => go(`#/carves?before_at=${last.created_at}&before_id=${enc(last.session_id)}`), { id: "next-page" }));
  main.replaceChildren(
    pageHead("Carves", can("operator") ? button("Carve a file", () => go(`#/query?sql=${enc("SELECT * FROM carves WHERE carve = 1 AND path = '/etc/hosts';")}`), { class: "secondary" }) : null),
    el("p", { class: "muted" }, "A carve is asked for by a live query on the carves table with carve = 1; its archive arrives in blocks."),
    table("carves", ["Host", "Path", "Size", "State", "Asked", "SHA-256", ""], rows, "No carves."),
    pager,
  );
}

// ---- alerts and dead letters ----

async function alertsPage(params) {
  const q = new URLSearchParams(params);
  const query = new URLSearchParams({ limit: String(PAGE) });
  for (const k of ["before_at", "before_id"]) if (q.get(k)) query.set(k, q.get(k));
  const alerts = await api("GET", `/api/v1/alerts?${query}`);
  const rows = alerts.map((a) => [
    when(a.at),
    a.rule,
    a.hostname ? el("a", { href: `#/hosts/${enc(a.host_id)}` }, a.hostname) : a.host_id,
    a.summary,
    a.actions.map((o) => el("span", { class: `tag ${o.state === "dead" || o.state === "failed" ? "bad" : ""}` }, `${o.action} ${o.state}`)),
  ]);
  const pager = el("div", { class: "pager" });
  const last = alerts[alerts.length - 1];
  if (alerts.length === PAGE && last) pager.append(button("Older", () => go(`#/alerts?before_at=${last.at}&before_id=${enc(last.id)}`), { id: "next-page" }));
  main.replaceChildren(pageHead("Alerts"), table("alerts", ["At", "Rule", "Host", "Summary", "Delivery"], rows, "No alerts."), pager);
}

const ADMIN_TABS = [["users", "Users"], ["tokens", "API tokens"], ["secrets", "Enroll secrets"], ["dead-letters", "Dead letters"], ["destinations", "Log destinations"], ["audit", "Audit log"]];

function adminTabs(current) {
  return el("nav", { class: "tabs" }, ADMIN_TABS.map(([k, t]) => el("a", { href: `#/admin/${k}`, class: k === current ? "active" : "" }, t)));
}

/** A value shown once (a new token or secret) with its warning. */
function shownOnce(what, value) {
  return el("div", { class: "card once", id: "shown-once" }, el("strong", {}, `${what}: `), el("code", {}, value), el("p", { class: "muted" }, "Copy it now: it is not shown again."));
}

async function deadLettersPage() {
  const letters = await api("GET", "/api/v1/dead_letters");
  const problem = el("p", { class: "error", role: "alert" });
  const rows = letters.map((d) => [
    when(d.dead_at),
    d.alert.rule,
    d.alert.summary,
    d.url,
    String(d.attempts),
    d.last_error,
    el(
      "span",
      {},
      button("Redrive", () => act(problem, async () => {
        await api("POST", `/api/v1/dead_letters/${enc(d.id)}/redrive`, {});
        route();
      }), { class: "secondary" }),
      " ",
      button("Drop", () => act(problem, async () => {
        if (!confirm("Drop this dead letter? The webhook never gets it.")) return;
        await api("DELETE", `/api/v1/dead_letters/${enc(d.id)}`);
        route();
      }), { class: "danger" }),
    ),
  ]);
  main.replaceChildren(pageHead("Dead letters"), adminTabs("dead-letters"), problem, el("p", { class: "muted" }, "Webhook deliveries that failed every retry."), table("dead-letters", ["Dead since", "Rule", "Alert", "Webhook", "Attempts", "Last error", ""], rows, "No dead letters."));
}

async function usersPage() {
  const users = await api("GET", "/api/v1/users");
  const problem = el("p", { class: "error", role: "alert" });
  const note = el("div", { id: "user-note" });
  const roleSelect = (u) => {
    const s = el("select", { "aria-label": `role of ${u.name}` }, ["observer", "operator", "admin"].map((r) => el("option", { value: r, selected: r === u.role }, r)));
    s.addEventListener("change", () => act(problem, async () => {
      await api("PATCH", `/api/v1/users/${enc(u.name)}`, { role: s.value });
      route();
    }));
    return s;
  };
  const rows = users.map((u) => [
    u.name,
    u.name === me.name ? u.role : roleSelect(u),
    u.disabled ? "disabled" : "active",
    when(u.created_at),
    el(
      "span",
      { class: "row-actions" },
      button("Invite link", () => act(problem, async () => {
        const i = await api("POST", `/api/v1/users/${enc(u.name)}/invite`, {});
        note.replaceChildren(shownOnce(`One-time sign-in link for ${u.name} (valid until ${new Date(i.expires_at).toISOString().slice(0, 16).replace("T", " ")} UTC)`, location.origin + i.path));
      }), { class: "secondary" }),
      button("Set password", () => {
        const f = editForm("set-password", [{ name: "password", label: `New password for ${u.name} (12 characters or more)`, kind: "password", required: true }], undefined, async (body) => {
          await api("PUT", `/api/v1/users/${enc(u.name)}/password`, body);
          note.replaceChildren(el("p", { class: "card" }, `Password of ${u.name} set.`));
        }, "Set password", true);
        note.replaceChildren(f);
      }, { class: "secondary" }),
      u.name === me.name
        ? null
        : button(u.disabled ? "Enable" : "Disable", () => act(problem, async () => {
            await api("PATCH", `/api/v1/users/${enc(u.name)}`, { disabled: !u.disabled });
            route();
          }), { class: u.disabled ? "secondary" : "danger" }),
    ),
  ]);
  const create = editForm(
    "new-user",
    [
      { name: "name", label: "User name", required: true },
      { name: "role", label: "Role", kind: "select", options: [["observer", "observer"], ["operator", "operator"], ["admin", "admin"]] },
    ],
    undefined,
    async (body) => {
      await api("POST", "/api/v1/users", body);
      route();
    },
    "Add user",
    true,
  );
  main.replaceChildren(pageHead("Users"), adminTabs("users"), problem, note, table("users", ["Name", "Role", "State", "Created", ""], rows), el("h2", {}, "Add a user"), create);
}

async function tokensPage() {
  const tokens = (await api("GET", "/api/v1/tokens")).filter((t) => (t.kind || "api") === "api");
  const problem = el("p", { class: "error", role: "alert" });
  const note = el("div");
  const rows = tokens.map((t) => [
    el("code", {}, t.id),
    t.user,
    t.description,
    when(t.created_at),
    t.expires_at ? new Date(t.expires_at).toISOString().slice(0, 16).replace("T", " ") : "never",
    t.revoked ? "revoked" : "active",
    t.revoked ? "" : button("Revoke", () => act(problem, async () => {
      if (!confirm(`Revoke token ${t.id}? Scripts using it stop working.`)) return;
      await api("POST", `/api/v1/tokens/${enc(t.id)}/revoke`, {});
      route();
    }), { class: "danger" }),
  ]);
  const fields = [
    { name: "user", label: "For user", required: true, path: true },
    { name: "description", label: "Description" },
    { name: "expires_in", label: "Valid for (seconds; empty: until revoked)", kind: "number", min: 1 },
  ];
  const create = editForm("new-token", fields, undefined, async (body, f) => {
    const user = f.elements.namedItem("user").value.trim();
    if (!user) throw new ApiError(400, "give the user the token acts as", "user");
    const t = await api("POST", `/api/v1/users/${enc(user)}/tokens`, body);
    note.replaceChildren(shownOnce(`Token for ${user}`, t.secret));
    f.reset();
  }, "Create token", true);
  main.replaceChildren(pageHead("API tokens"), adminTabs("tokens"), problem, note, table("tokens", ["Id", "User", "Description", "Created", "Expires", "State", ""], rows, "No API tokens."), el("h2", {}, "New token"), create);
}

async function secretsPage() {
  const secrets = await api("GET", "/api/v1/enroll_secrets");
  const problem = el("p", { class: "error", role: "alert" });
  const note = el("div");
  const rows = secrets.map((s) => [
    s.id,
    (s.labels || []).map((l) => el("span", { class: "tag" }, l)),
    when(s.created_at),
    s.expires_at ? new Date(s.expires_at).toISOString().slice(0, 16).replace("T", " ") : "never",
    s.revoked ? "revoked" : "active",
    s.revoked ? "" : button("Revoke", () => act(problem, async () => {
      if (!confirm(`Revoke enroll secret ${s.id}? Hosts enrolled with it stay; new ones cannot use it.`)) return;
      await api("POST", `/api/v1/enroll_secrets/${enc(s.id)}/revoke`, {});
      route();
    }), { class: "danger" }),
  ]);
  const create = editForm(
    "new-secret",
    [
      { name: "id", label: "Name", required: true },
      { name: "labels", label: "Labels every host enrolling with it gets", kind: "list" },
      { name: "expires_in", label: "Accepted for (seconds; empty: until revoked)", kind: "number", min: 1 },
    ],
    undefined,
    async (body, f) => {
      const s = await api("POST", "/api/v1/enroll_secrets", body);
      note.replaceChildren(shownOnce(`Enroll secret ${s.id}`, s.secret));
      f.reset();
    },
    "Create secret",
    true,
  );
  main.replaceChildren(pageHead("Enroll secrets"), adminTabs("secrets"), problem, note, table("secrets", ["Name", "Labels", "Created", "Expires", "State", ""], rows, "No enroll secrets."), el("h2", {}, "New enroll secret"), create);
}

async function destinationsPage() {
  const dests = await api("GET", "/api/v1/destinations");
  const problem = el("p", { class: "error", role: "alert" });
  const rows = dests.map((d) => [
    d.name,
    d.kind,
    d.paused ? "paused" : d.last_error ? el("span", { class: "error" }, d.last_error) : "delivering",
    `${d.lag_lines} lines${d.lag_seconds ? `, ${d.lag_seconds} s` : ""}${d.missed ? ` (${d.missed} missed)` : ""}`,
    `${d.delivered} / ${d.failed} / ${d.dropped}`,
    button(d.paused ? "Resume" : "Pause", () => act(problem, async () => {
      await api("POST", `/api/v1/destinations/${enc(d.name)}/${d.paused ? "resume" : "pause"}`, {});
      route();
    }), { class: "secondary" }),
  ]);
  main.replaceChildren(pageHead("Log destinations"), adminTabs("destinations"), problem, table("destinations", ["Name", "Kind", "State", "Behind", "Delivered / failed / dropped", ""], rows, "No destinations: add them in the configuration file or with gatehouse ctl destinations put."));
}

async function auditPage(params) {
  const q = new URLSearchParams(params);
  const filters = el(
    "form",
    { class: "filters", id: "audit-filters" },
    el("label", {}, "Actor", el("input", { name: "actor", value: q.get("actor") || "" })),
    el("label", {}, "Action or resource", el("input", { name: "action", value: q.get("action") || "", placeholder: "e.g. host or schedule.put" })),
    el("label", {}, "Target", el("input", { name: "target", value: q.get("target") || "" })),
    el("label", {}, "Outcome", el("select", { name: "outcome" }, [["", "any"], ["accepted", "accepted"], ["denied", "denied"], ["failed", "failed"], ["pending", "pending"]].map(([v, t]) => el("option", { value: v, selected: (q.get("outcome") || "") === v }, t)))),
    el("label", {}, "Since", el("input", { name: "since", type: "datetime-local", value: q.get("since") || "" })),
    el("label", {}, "Until", el("input", { name: "until", type: "datetime-local", value: q.get("until") || "" })),
    el("button", { type: "submit" }, "Filter"),
  );
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(filters)) if (v) next.set(k, v);
    go(`#/admin/audit?${next}`);
  });
  const query = new URLSearchParams({ limit: String(PAGE) });
  for (const k of ["actor", "action", "target", "outcome", "before_at", "before_id"]) if (q.get(k)) query.set(k, q.get(k));
  for (const k of ["since", "until"]) if (q.get(k)) query.set(k, String(new Date(q.get(k)).getTime()));
  const events = await api("GET", `/api/v1/audit?${query}`);
  const rows = events.map((e) => [
    new Date(e.at).toISOString().replace("T", " ").slice(0, 19),
    e.actor,
    e.action,
    e.target,
    el("span", { class: e.outcome === "accepted" ? "" : "error" }, e.outcome),
    el("details", {}, el("summary", {}, "detail"), el("pre", { class: "code" }, JSON.stringify(e.detail, null, 2))),
  ]);
  const pager = el("div", { class: "pager" });
  const last = events[events.length - 1];
  if (events.length === PAGE && last) {
    const n = new URLSearchParams(q);
    n.set("before_at", String(last.at));
    n.set("before_id", last.id);
    pager.append(button("Older", () => go(`#/admin/audit?${n}`), { id: "next-page" }));
  }
  main.replaceChildren(pageHead("Audit log"), adminTabs("audit"), filters, table("audit", ["At (UTC)", "Actor", "Action", "Target", "Outcome", ""], rows, "No event matches."), pager);
}

async function route() {
  if (watching) {
    watching.close();
    watching = null;
  }
  const [path, query] = (location.hash.slice(1) || "/overview").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("[data-nav]")) {
    const section = { "label-configs": "labels", "label-queries": "labels", results: "hosts" }[parts[0]] || parts[0];
    a.classList.toggle("active", a.dataset.nav === section);
  }
  try {
    if (parts[0] === "sign-in") return signInPage();
    if (parts[0] === "invite" && parts[1]) return invitePage(parts[1]);
    if (!me) await whoami();
    const [page, sub, key] = parts;
    if (page === "hosts" && sub) return await hostPage(sub);
    if (page === "hosts") return await hostsPage(query || "");
    if (page === "query") return queryPage(query || "");
    if (page === "results") return await resultsPage(query || "");
    if (page === "carves") return await carvesPage(query || "");
    if (page === "alerts") return await alertsPage(query || "");
    if (RESOURCES[page]) {
      if (sub === "new") return await editPage(page, undefined);
      if (sub === "edit" && key !== undefined) return await editPage(page, key);
      return await listPage(page);
    }
    if (page === "labels") return await labelsPage();
    if (page === "admin") {
      if (!can("admin")) throw new ApiError(403, "Only admins manage users, tokens, enroll secrets, dead letters, destinations and the audit log.");
      const pages = { users: usersPage, tokens: tokensPage, secrets: secretsPage, "dead-letters": deadLettersPage, destinations: destinationsPage, audit: () => auditPage(query || "") };
      return await (pages[sub] || usersPage)();
    }
    return await overviewPage();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    main.replaceChildren(el("p", { class: "error", role: "alert" }, e.message));
  }
}

/** Label configs and label queries, side by side. */
async function labelsPage() {
  await listPage("label-configs");
  const configs = [...main.childNodes];
  await listPage("label-queries");
  const queries = [...main.childNodes];
  main.replaceChildren(...configs, el("div", { class: "spacer" }), ...queries);
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
