// mesh dashboard: keeps the server-rendered page current and sends the person's actions.
// Every value from the mesh is put on the page as text (never as HTML). The markup of each
// section is the same as the server's first view (drasill_cli/web/render.py).
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const ACTOR = document.body.dataset.actor;
const TASK_STATES = ["queued", "claimed", "working", "review", "completed", "failed", "abandoned",
  "cancelled"];
const FINISHED = ["completed", "failed", "abandoned", "cancelled"];
const HELD = ["claimed", "working", "review"];
const BLOCKING = ["failed", "abandoned", "cancelled"];
const shown = {};         // section -> JSON last rendered (render only what changed)
let confirming = null;    // lock path awaiting its force-unlock confirmation
let detailId = null;      // the task whose detail is open
let view = null;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function ago(iso) {
  if (!iso) return "-";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (Number.isNaN(seconds)) return "-";
  if (seconds < 60) return `${Math.floor(seconds)}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

function until(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  if (Number.isNaN(seconds)) return "-";
  if (seconds <= 0) return "expired";
  if (seconds < 60) return `in ${Math.ceil(seconds)}s`;
  if (seconds < 3600) return `in ${Math.ceil(seconds / 60)}m`;
  return `in ${(seconds / 3600).toFixed(1)}h`;
}

// An amount in GiB with the precision of the terminal (drasill_cli/units.py): two decimals at most.
function gib(value) {
  return typeof value === "number" ? value.toFixed(2).replace(/\.?0+$/, "") : "-";
}

function pair(declared, measured) {
  return declared == null && measured == null ? "-" : `${gib(declared)} / ${gib(measured)}`;
}

function size(value) {
  if (typeof value !== "number") return "";
  if (value < 1024) return `${value} B`;
  let amount = value;
  for (const unit of ["KiB", "MiB"]) {
    amount /= 1024;
    if (amount < 1024) return `${amount.toFixed(1)} ${unit}`;
  }
  return `${(amount / 1024).toFixed(1)} GiB`;
}

function searchText(...parts) {
  return parts.filter((p) => p !== null && p !== undefined && p !== "").join(" ").toLowerCase();
}

function changed(section, value) {
  const text = JSON.stringify(value);
  if (shown[section] === text) return false;
  shown[section] = text;
  return true;
}

function replaceRows(tbody, rows, emptyText, columns) {
  tbody.replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colspan: String(columns), class: "empty" }, emptyText))]));
}

// ---- sections ----------------------------------------------------------------------------

function currentTask(agent) {
  const task = agent.task;
  if (!task) return el("span", { class: "dim" }, "-");
  const others = task.others ? ` +${task.others}` : "";
  return el("a", { class: "task-link", href: "#", dataset: { id: task.id } },
    el("span", { class: `badge ${task.state}` }, task.state), " ",
    `${task.id} ${task.title || ""}${others}`);
}

function renderAgents(agents, totals) {
  if (!changed("agents", [agents, totals])) return;
  const counts = totals.agents || {};
  const total = totals.agents_total ?? agents.length;
  const more = total > agents.length ? `; ${agents.length} shown` : "";
  document.getElementById("agents-count").textContent = `(${total}${
    total ? ": " + Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ") : ""}${more})`;
  const rows = agents.map((a) => {
    const about = [a.role, a.tool].filter((x) => x).join(" · ");
    const task = a.task || {};
    return el("tr", { dataset: { name: a.name, state: a.state,
      search: searchText(a.name, a.state, a.host, about, task.id, task.title) } },
    el("td", { class: "name" }, el("b", {}, a.name),
      about ? el("div", { class: "dim small" }, about) : null),
    el("td", { class: `state state-${a.state}` }, a.state),
    el("td", { class: "host" }, a.host || "-"),
    el("td", { class: "current" }, currentTask(a)),
    el("td", { class: "held num" }, a.locks_held ? String(a.locks_held) : "-"),
    el("td", { class: "unread num" }, a.unread ? String(a.unread) : "-"),
    el("td", { class: "ago", dataset: { ts: a.last_seen || "" } }, ago(a.last_seen)),
    el("td", { class: "mem" }, pair(a.declared?.ram_gb, a.measured?.ram_gb)),
    el("td", { class: "mem" }, pair(a.declared?.vram_gb, a.measured?.vram_gb)));
  });
  replaceRows(document.querySelector("#agents tbody"), rows,
    "no agents registered yet (mesh register NAME)", 9);
  const select = document.getElementById("send-to");
  const current = select.value;
  const names = agents.filter((a) => a.name !== ACTOR).map((a) => a.name);
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)),
    el("option", { value: "all" }, "all (every other agent)"));
  if ([...names, "all"].includes(current)) select.value = current;
}

// (id, state) of each dependency a task still waits on: the core's `waits_on` when the task
// has it, else its dependencies not yet completed (their state from the board).
function waits(task, byId) {
  if (Array.isArray(task.waits_on)) {
    return task.waits_on.map((w) => (typeof w === "string"
      ? [w, byId[w]?.state || "?"] : [String(w.id), w.state || "?"]));
  }
  if (task.state !== "queued") return [];
  return (task.depends_on || []).map((d) => [d, byId[d]?.state || "?"])
    .filter(([, s]) => s !== "completed");
}

function card(t, byId) {
  const waiting = waits(t, byId);
  const blocked = waiting.filter(([, s]) => BLOCKING.includes(s)).map(([d, s]) => `${d} ${s}`);
  const holder = t.claimed_by;
  return el("div", { class: `task ${t.state}`, tabindex: "0",
    dataset: { id: t.id, state: t.state, search: searchText(t.id, t.title, t.state, holder, t.created_by) } },
  el("div", { class: "title" }, t.title),
  el("div", { class: "meta" }, `${t.id} · p${t.priority} · by ${t.created_by || "-"}`),
  holder && HELD.includes(t.state) ? el("div", { class: "meta holder" }, `held by ${holder}`) : null,
  holder && FINISHED.includes(t.state) ? el("div", { class: "meta holder" }, `done by ${holder}`) : null,
  blocked.length ? el("div", { class: "meta blocked" }, `blocked for good: ${blocked.join(", ")}`)
    : waiting.length ? el("div", { class: "meta deps", dataset: { deps: waiting.map(([d]) => d).join(" ") } },
      `waits on ${waiting.map(([d, s]) => `${d} (${s})`).join(", ")}`) : null,
  t.review ? el("div", { class: "meta" }, t.approved_by ? `approved by ${t.approved_by}` : "needs review") : null,
  t.result ? el("div", { class: "meta result" }, `result: ${t.result}`) : null,
  t.state === "review" ? el("button", { class: "review-open", type: "button", dataset: { id: t.id } }, "Review…") : null);
}

function byClaimOrder(a, b) {
  return b.priority - a.priority || (a.id < b.id ? -1 : 1);
}

function byLatest(a, b) {
  return (a.updated_at || "") < (b.updated_at || "") ? 1 : (a.updated_at || "") > (b.updated_at || "") ? -1
    : (a.id < b.id ? 1 : -1);
}

function renderTasks(tasks, totals) {
  const perState = totals.tasks || {};
  if (!changed("tasks", [tasks, perState])) return;
  const total = Object.values(perState).reduce((sum, n) => sum + n, 0);
  const open = Object.entries(perState).filter(([s]) => !FINISHED.includes(s))
    .reduce((sum, [, n]) => sum + n, 0);
  document.getElementById("tasks-count").textContent = `(${total}, ${open} open)`;
  const byId = Object.fromEntries(tasks.map((t) => [t.id, t]));
  const columns = TASK_STATES.map((state) => {
    const cards = tasks.filter((t) => t.state === state)
      .sort(FINISHED.includes(state) ? byLatest : byClaimOrder).map((t) => card(t, byId));
    const inState = perState[state] ?? cards.length;
    const hidden = inState > cards.length
      ? el("div", { class: "meta more" }, `… and ${inState - cards.length} more (mesh task list --state ${state})`)
      : null;
    return el("div", { class: "column", dataset: { state }, "data-finished": FINISHED.includes(state) },
      el("h3", {}, `${state} (${inState})`), ...cards, hidden);
  });
  document.getElementById("board").replaceChildren(...columns);
  const depends = document.getElementById("task-depends");
  const chosen = new Set([...depends.selectedOptions].map((o) => o.value));
  depends.replaceChildren(...tasks.filter((t) => !["failed", "abandoned", "cancelled"].includes(t.state))
    .map((t) => { const o = el("option", { value: t.id }, `${t.title} (${t.id}, ${t.state})`);
      o.selected = chosen.has(t.id); return o; }));
}

function renderLocks(locks) {
  if (!changed("locks", [locks, confirming, view.counts?.locks])) return;
  const total = view.counts?.locks ?? locks.length;
  document.getElementById("locks-count").textContent = `(${total}${
    total > locks.length ? `; ${locks.length} shown` : ""})`;
  const rows = locks.map((lock) => {
    const action = confirming === lock.path
      ? el("span", {},
        el("button", { class: "danger confirm-unlock", type: "button" }, `Take it from ${lock.holder}`), " ",
        el("button", { class: "secondary cancel-unlock", type: "button" }, "Cancel"))
      : el("button", { class: "secondary unlock", type: "button" }, "Force unlock");
    return el("tr", { dataset: { path: lock.path, holder: lock.holder, search: searchText(lock.shown, lock.holder) } },
      el("td", { class: "path", title: lock.path }, lock.shown || lock.path), el("td", {}, lock.mode),
      el("td", {}, lock.holder),
      el("td", { class: "until", dataset: { ts: lock.expires_at } }, until(lock.expires_at)),
      el("td", {}, action));
  });
  replaceRows(document.querySelector("#locks tbody"), rows, "no locks held", 5);
}

function readState(m) {
  return m.read ? el("span", { class: "read-state read" }, `read by ${m.read.by} ${ago(m.read.at)}`)
    : el("span", { class: "read-state unread" }, "unread");
}

function renderMessages(messages) {
  if (!changed("messages", messages)) return;
  const items = messages.map((m) => el("li", { dataset: { id: m.id, search: searchText(m.from, m.to, m.body) } },
    el("div", {}, el("b", {}, m.from || "-"), ` → ${m.to} `,
      m.priority === "urgent" ? el("span", { class: "urgent" }, "urgent ") : null,
      el("span", { class: "dim ago", dataset: { ts: m.at || "" } }, ago(m.at)), " · ", readState(m)),
    el("div", { class: "body" }, m.body === null ? "(no longer stored)"
      : m.body + (m.cut ? " …" : "")),
    (m.attachments || []).length ? el("ul", { class: "files" },
      ...m.attachments.map((f) => el("li", {}, `📎 ${f.name} ${size(f.size)}`.trimEnd()))) : null));
  document.getElementById("messages").replaceChildren(
    ...(items.length ? items : [el("li", { class: "empty" }, "no messages yet")]));
}

function renderEvents(events) {
  if (!changed("events", events)) return;
  const items = events.map((e) => el("li", { dataset: { event: e.event || "", search: searchText(e.what) } },
    el("span", { class: "dim ago", dataset: { ts: e.time || "" } }, ago(e.time)), " ", e.what || ""));
  document.getElementById("events").replaceChildren(
    ...(items.length ? items : [el("li", { class: "empty" }, "nothing recorded yet")]));
}

function gauge(label, section) {
  const limit = section.limit_gb || 0;
  const declared = section.declared_gb || 0;
  const share = limit > 0 ? Math.min(1, declared / limit) : 0;
  const level = share >= 0.9 ? "full" : share >= 0.7 ? "warn" : "";
  const fill = el("span", { class: `${level} w${Math.round(share * 10)}`.trim(), dataset: { share: share.toFixed(3) } });
  return el("div", { class: "gauge", dataset: { resource: label } },
    el("div", {}, el("b", {}, label), ` ${gib(declared)} of ${gib(limit)} GiB declared · `
      + `agents use ${gib(section.agents_gb)} · free ${gib(section.free_gb)} · `
      + `machine ${gib(section.used_gb)} / ${gib(section.total_gb)} GiB used`),
    el("div", { class: "bar" }, fill));
}

function renderBudgets(budgets, warnings) {
  if (!changed("budgets", [budgets, warnings])) return;
  document.getElementById("policy").textContent = budgets.policy ? `(policy ${budgets.policy})` : "";
  document.getElementById("budgets").replaceChildren(...(budgets.ram ? [gauge("RAM", budgets.ram)] : []),
    budgets.gpu ? gauge("GPU", budgets.gpu) : el("div", { class: "empty" }, "GPU: none found"));
  document.getElementById("warnings").replaceChildren(...(warnings || []).map((w) => el("li", {}, w)));
}

function render(next) {
  view = next;
  document.getElementById("mesh-dir").textContent = next.mesh_dir;
  renderBudgets(next.budgets, next.warnings);
  renderAgents(next.agents, next.counts || {});
  renderTasks(next.tasks, next.counts || {});
  renderLocks(next.locks);
  renderMessages(next.messages);
  renderEvents(next.recent);
  applyFilters();
  document.body.dataset.generated = next.generated_at;
  if (detailId !== null && next.tasks.some((t) => t.id === detailId)) refreshDetail();
}

function tick() {
  for (const node of document.querySelectorAll(".ago[data-ts]")) node.textContent = ago(node.dataset.ts);
  for (const node of document.querySelectorAll(".until[data-ts]")) node.textContent = until(node.dataset.ts);
}

// ---- filters -----------------------------------------------------------------------------

function applyFilters() {
  const words = document.getElementById("search").value.trim().toLowerCase().split(/\s+/).filter((w) => w);
  const hideFinished = document.getElementById("hide-finished").checked;
  const hideDead = document.getElementById("hide-dead").checked;
  for (const node of document.querySelectorAll("[data-search]")) {
    const text = node.dataset.search;
    let hide = !words.every((w) => text.includes(w));
    if (hideDead && node.dataset.state === "dead" && node.matches("tr[data-name]")) hide = true;
    node.hidden = hide;
  }
  for (const column of document.querySelectorAll("#board .column[data-finished]")) {
    column.hidden = hideFinished;
  }
  document.body.classList.toggle("filtered", words.length > 0);
}

// ---- actions -----------------------------------------------------------------------------

let flashTimer = null;
function flash(text, isError) {
  const box = document.getElementById("flash");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { box.hidden = true; }, isError ? 12000 : 5000);
}

async function act(name, payload) {
  let response, answer;
  try {
    response = await fetch(`/api/${name}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Mesh-Token": TOKEN },
      body: JSON.stringify(payload),
      credentials: "omit",
    });
    answer = await response.json();
  } catch (err) {
    flash(`could not reach the dashboard (${err}); is mesh dashboard still running?`, true);
    return false;
  }
  if (!response.ok) {
    flash(answer?.error?.message || `refused (HTTP ${response.status})`, true);
    return false;
  }
  flash(summary(name, answer.result), false);
  return true;
}

function summary(name, result) {
  if (name === "send") return result.length ? `sent ${result.map((m) => `${m.id} to ${m.to}`).join(", ")}`
    : "no other agent is registered: nothing was sent";
  if (name === "task") return `added ${result.id} [${result.state}] ${result.title}`;
  if (name === "unlock") return `unlocked ${result.map((l) => `${l.path} (was ${l.holder})`).join(", ")}`;
  return `${name === "approve" ? "approved" : "rejected"} ${result.id}: now ${result.state}`;
}

function busy(button, promise) {
  button.disabled = true;
  return promise.finally(() => { button.disabled = false; });
}

function openDialog(id, focus) {
  for (const open of document.querySelectorAll("dialog[open]")) open.close();
  const dialog = document.getElementById(id);
  dialog.showModal();
  if (focus) document.getElementById(focus).focus();
}

document.getElementById("send-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target;
  busy(document.getElementById("send-button"), act("send", {
    to: document.getElementById("send-to").value,
    body: document.getElementById("send-body").value,
    urgent: document.getElementById("send-urgent").checked,
  }).then((ok) => { if (ok) { form.reset(); document.getElementById("send-dialog").close(); } }));
});

document.getElementById("task-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target;
  const depends = document.getElementById("task-depends");
  busy(document.getElementById("task-button"), act("task", {
    title: document.getElementById("task-title").value,
    body: document.getElementById("task-body").value,
    priority: Number(document.getElementById("task-priority").value || 0),
    review: document.getElementById("task-review").checked,
    depends: [...depends.selectedOptions].map((o) => o.value),
  }).then((ok) => {
    if (ok) { form.reset(); for (const o of depends.options) o.selected = false;
      document.getElementById("task-dialog").close(); }
  }));
});

// ---- a task's detail ---------------------------------------------------------------------

async function fetchDetail(id) {
  const response = await fetch(`/api/task/${encodeURIComponent(id)}`, {
    headers: { "X-Mesh-Token": TOKEN }, credentials: "omit" });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer?.error?.message || `HTTP ${response.status}`);
  return answer;
}

function field(label, value) {
  return value === null || value === undefined || value === "" ? null
    : el("div", { class: "field" }, el("span", { class: "dim" }, `${label} `), String(value));
}

function renderDetail(task) {
  const byId = Object.fromEntries((view?.tasks || []).map((t) => [t.id, t]));
  const waiting = waits(task, byId);
  const history = task.history.map((h) => el("li", { dataset: { event: h.event || "" } },
    el("span", { class: "dim" }, (h.time || "").replace("T", " ").slice(0, 19)), " ",
    h.what || "", h.note ? el("div", { class: "note" }, `“${h.note}”`) : null));
  const parts = [
    el("h2", {}, el("span", { class: `badge ${task.state}` }, task.state), " ", `${task.id} ${task.title}`),
    el("div", { class: "fields" },
      field("priority", task.priority), field("added by", task.created_by),
      field(FINISHED.includes(task.state) ? "done by" : "held by", task.claimed_by),
      field("attempts", task.attempts),
      field("depends on", (task.depends_on || []).join(", ")),
      field("waits on", waiting.map(([d, s]) => `${d} (${s})`).join(", ")),
      field("review", task.review ? (task.approved_by ? `approved by ${task.approved_by}` : "needed") : null)),
    task.body ? el("div", { class: "body" }, task.body) : null,
    task.result ? el("div", { class: "field" }, el("span", { class: "dim" }, "result "), task.result) : null,
    task.review_note ? el("div", { class: "field review-note" }, el("span", { class: "dim" }, "review note "), task.review_note) : null,
    el("h3", {}, "History"),
    el("ul", { class: "feed history" }, ...(history.length ? history : [el("li", { class: "empty" }, "nothing recorded")]))];
  document.getElementById("detail").replaceChildren(...parts.filter((part) => part !== null));
  const form = document.getElementById("review-form");
  form.hidden = task.state !== "review";
  document.getElementById("detail-dialog").dataset.id = task.id;
  document.getElementById("detail-dialog").dataset.state = task.state;
}

async function openDetail(id, review) {
  detailId = id;
  document.getElementById("review-form").reset();
  document.getElementById("detail").replaceChildren(el("p", { class: "dim" }, `loading ${id}…`));
  document.getElementById("review-form").hidden = true;
  openDialog("detail-dialog");
  try {
    renderDetail(await fetchDetail(id));
    if (review && !document.getElementById("review-form").hidden) document.getElementById("review-note").focus();
  } catch (err) {
    document.getElementById("detail").replaceChildren(el("p", { class: "error" }, String(err.message || err)));
  }
}

async function refreshDetail() {
  if (!document.getElementById("detail-dialog").open || detailId === null) return;
  try { renderDetail(await fetchDetail(detailId)); } catch { /* keep what is shown */ }
}

function verdict(name) {
  const note = document.getElementById("review-note");
  if (name === "reject" && !note.value.trim()) {
    // The server's rule (mesh task reject needs --note): say it before asking it.
    flash("a rejection needs a note saying what to fix (it is sent to the author)", true);
    note.focus();
    return;
  }
  const button = document.getElementById(`${name}-button`);
  busy(button, act(name, { id: detailId, note: note.value }).then((ok) => {
    if (ok) { document.getElementById("review-form").reset(); refreshDetail(); }
  }));
}

document.getElementById("approve-button").addEventListener("click", () => verdict("approve"));
document.getElementById("reject-button").addEventListener("click", () => verdict("reject"));
document.getElementById("detail-dialog").addEventListener("close", () => { detailId = null; });

// ---- clicks (on server-rendered and live markup alike) -----------------------------------

document.addEventListener("click", (event) => {
  const target = event.target.closest("button, a, .task");
  if (!target) return;
  if (target.matches("dialog .close")) { target.closest("dialog").close(); return; }
  if (target.matches("#open-send")) { openDialog("send-dialog", "send-body"); return; }
  if (target.matches("#open-task")) { openDialog("task-dialog", "task-title"); return; }
  if (target.matches("#open-help")) { openDialog("help-dialog"); return; }
  if (target.matches(".review-open")) { openDetail(target.dataset.id, true); return; }
  if (target.matches("a.task-link")) { event.preventDefault(); openDetail(target.dataset.id, false); return; }
  if (target.matches("#board .task")) { openDetail(target.dataset.id, false); return; }
  const row = target.closest("#locks tr[data-path]");
  if (!row) return;
  if (target.matches("button.unlock")) confirming = row.dataset.path;
  else if (target.matches("button.cancel-unlock")) confirming = null;
  else if (target.matches("button.confirm-unlock")) {
    confirming = null;
    act("unlock", { path: row.dataset.path, confirm: true }).finally(() => view && renderLocks(view.locks));
  }
  if (view) renderLocks(view.locks);
  else if (target.matches("button.unlock")) {  // before the first event: the same two buttons
    target.replaceWith(el("button", { class: "danger confirm-unlock", type: "button" }, `Take it from ${row.dataset.holder}`),
      " ", el("button", { class: "secondary cancel-unlock", type: "button" }, "Cancel"));
  }
});

// ---- keyboard ----------------------------------------------------------------------------

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = event.target.closest?.("input, textarea, select");
  const search = document.getElementById("search");
  if (event.key === "Escape" && event.target === search) {
    search.value = ""; search.blur(); applyFilters(); return;
  }
  if (typing || document.querySelector("dialog[open]")) return;
  if (event.key === "Enter" && event.target.matches?.("#board .task")) {
    event.preventDefault(); openDetail(event.target.dataset.id, false); return;
  }
  const keys = {
    "/": () => { search.focus(); search.select(); },
    m: () => openDialog("send-dialog", "send-body"),
    n: () => openDialog("task-dialog", "task-title"),
    f: () => { const box = document.getElementById("hide-finished"); box.checked = !box.checked; applyFilters(); },
    d: () => { const box = document.getElementById("hide-dead"); box.checked = !box.checked; applyFilters(); },
    "?": () => openDialog("help-dialog"),
  };
  if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
});

for (const id of ["search", "hide-finished", "hide-dead"]) {
  document.getElementById(id).addEventListener("input", applyFilters);
}

// ---- live feed ---------------------------------------------------------------------------

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource(`/events?token=${encodeURIComponent(TOKEN)}`);
  // The whole view first (and again after a gap), then only what changed: the sections
  // that changed, and the tasks by id (put: new or changed; drop: gone).
  source.addEventListener("view", (event) => render(JSON.parse(event.data)));
  source.addEventListener("patch", (event) => {
    if (view === null) return;
    const patch = JSON.parse(event.data);
    const next = { ...view };
    for (const [key, value] of Object.entries(patch)) if (key !== "tasks") next[key] = value;
    if (patch.tasks) {
      const dropped = new Set(patch.tasks.drop);
      const put = Object.fromEntries(patch.tasks.put.map((t) => [t.id, t]));
      next.tasks = view.tasks.filter((t) => !dropped.has(t.id) && !(t.id in put))
        .concat(Object.values(put));
    }
    render(next);
  });
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "pill on"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "pill off"; });
}

setInterval(tick, 1000);
applyFilters();
connect();
