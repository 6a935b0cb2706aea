// mesh dashboard: renders the server's view and sends the person's actions.
// Every value from the mesh is put on the page as text (never as HTML).
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const ACTOR = document.body.dataset.actor;
const TASK_STATES = ["queued", "claimed", "working", "review", "completed", "failed", "abandoned",
  "cancelled"];
const FINISHED = ["completed", "failed", "abandoned", "cancelled"];
const shown = {};         // section -> JSON last rendered (render only what changed)
const notes = {};         // task id -> review note being typed
let confirming = null;    // lock path awaiting its force-unlock confirmation
let view = null;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function ago(iso) {
  if (!iso) return "-";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

function until(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  if (seconds <= 0) return "expired";
  if (seconds < 60) return `in ${Math.ceil(seconds)}s`;
  if (seconds < 3600) return `in ${Math.ceil(seconds / 60)}m`;
  return `in ${(seconds / 3600).toFixed(1)}h`;
}

// An amount in GiB with the precision of the terminal (drasill_cli/units.py): two decimals at most.
function gb(value) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(2).replace(/\.?0+$/, "");
}

function pair(declared, measured) {
  return declared == null && measured == null ? "-" : `${gb(declared)} / ${gb(measured)}`;
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

function renderAgents(agents, totals) {
  if (!changed("agents", [agents, totals])) return;
  const counts = totals.agents || {};
  const total = totals.agents_total ?? agents.length;
  const more = total > agents.length ? `; ${agents.length} shown` : "";
  document.getElementById("agents-count").textContent = `(${total}${
    total ? ": " + Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ") : ""}${more})`;
  const rows = agents.map((a) => el("tr", { dataset: { name: a.name } },
    el("td", { class: "name" }, a.name),
    el("td", { class: `state state-${a.state}` }, a.state),
    el("td", {}, a.host || "-"),
    el("td", {}, a.role || "-"),
    el("td", {}, a.tool || "-"),
    el("td", { class: "unread" }, a.unread ? String(a.unread) : "-"),
    el("td", { class: "ago", dataset: { ts: a.last_seen || "" } }, ago(a.last_seen)),
    el("td", {}, pair(a.declared?.ram_gb, a.measured?.ram_gb)),
    el("td", {}, pair(a.declared?.vram_gb, a.measured?.vram_gb))));
  replaceRows(document.querySelector("#agents tbody"), rows,
    "no agents registered yet (mesh register NAME)", 9);
  const select = document.getElementById("send-to");
  const current = select.value;
  const names = agents.filter((a) => a.name !== ACTOR).map((a) => a.name);
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)),
    el("option", { value: "all" }, "all (every other agent)"));
  if ([...names, "all"].includes(current)) select.value = current;
}

function reviewControls(task) {
  const input = el("input", { class: "note", placeholder: "note (optional)", maxlength: "2000",
    oninput: (e) => { notes[task.id] = e.target.value; } });
  input.value = notes[task.id] || "";
  const verdict = (name) => () => act(name, { id: task.id, note: input.value })
    .then((ok) => { if (ok) delete notes[task.id]; });
  return el("div", { class: "review-actions" }, input,
    el("button", { class: "approve", type: "button", onclick: verdict("approve") }, "Approve"),
    " ",
    el("button", { class: "reject danger", type: "button", onclick: verdict("reject") }, "Reject"));
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
      .sort(FINISHED.includes(state) ? byLatest : byClaimOrder)
      .map((t) => {
        const ids = t.depends_on || [];
        const deps = ids.map((d) => (byId[d] ? `${byId[d].title} (${byId[d].state})` : d));
        return el("div", { class: `task ${t.state}`, dataset: { id: t.id, state: t.state } },
          el("div", { class: "title" }, t.title),
          el("div", { class: "meta" }, `${t.id} · priority ${t.priority}`),
          t.claimed_by ? el("div", { class: "meta" }, `by ${t.claimed_by}`) : null,
          deps.length ? el("div", { class: "meta deps", title: ids.join(", "),
            dataset: { deps: ids.join(" ") } }, `after ${deps.join(", ")}`) : null,
          t.review ? el("div", { class: "meta" },
            t.approved_by ? `approved by ${t.approved_by}` : "needs review") : null,
          t.result ? el("div", { class: "meta" }, `result: ${t.result}`) : null,
          state === "review" ? reviewControls(t) : null);
      });
    const inState = perState[state] ?? cards.length;
    const hidden = inState > cards.length
      ? el("div", { class: "meta more" }, `… and ${inState - cards.length} more (mesh task list --state ${state})`)
      : null;
    return el("div", { class: "column", dataset: { state } },
      el("h3", {}, `${state} (${inState})`), ...cards, hidden);
  });
  document.getElementById("board").replaceChildren(...columns);
  const depends = document.getElementById("task-depends");
  const chosen = new Set([...depends.selectedOptions].map((o) => o.value));
  depends.replaceChildren(...tasks.filter((t) => !["failed", "abandoned"].includes(t.state))
    .map((t) => { const o = el("option", { value: t.id }, `${t.title} (${t.id}, ${t.state})`);
      o.selected = chosen.has(t.id); return o; }));
}

function renderLocks(locks) {
  if (!changed("locks", [locks, confirming, view.counts?.locks])) return;
  const total = view.counts?.locks ?? locks.length;
  document.getElementById("locks-count").textContent = `(${total}${
    total > locks.length ? `; ${locks.length} shown` : ""})`;
  const rows = locks.map((lock) => {
    let action;
    if (confirming === lock.path) {
      action = el("span", {},
        el("button", { class: "danger confirm-unlock", type: "button",
          onclick: () => { confirming = null;
            act("unlock", { path: lock.path, confirm: true }).finally(() => renderLocks(view.locks)); } },
          `Take it from ${lock.holder}`), " ",
        el("button", { class: "secondary", type: "button",
          onclick: () => { confirming = null; renderLocks(view.locks); } }, "Cancel"));
    } else {
      action = el("button", { class: "secondary unlock", type: "button",
        onclick: () => { confirming = lock.path; renderLocks(view.locks); } }, "Force unlock");
    }
    return el("tr", { dataset: { path: lock.path, holder: lock.holder } },
      el("td", {}, lock.path), el("td", {}, lock.mode), el("td", {}, lock.holder),
      el("td", { class: "until", dataset: { ts: lock.expires_at } }, until(lock.expires_at)),
      el("td", {}, action));
  });
  replaceRows(document.querySelector("#locks tbody"), rows, "no locks held", 5);
}

function renderMessages(messages) {
  if (!changed("messages", messages)) return;
  const items = messages.map((m) => el("li", { dataset: { id: m.id } },
    el("div", {}, el("b", {}, m.from || "-"), ` → ${m.to} `,
      m.priority === "urgent" ? el("span", { class: "urgent" }, "urgent ") : null,
      el("span", { class: "dim ago", dataset: { ts: m.at || "" } }, ago(m.at))),
    el("div", { class: "body" }, m.body === null ? "(no longer stored)"
      : m.body + (m.cut ? " …" : ""))));
  document.getElementById("messages").replaceChildren(
    ...(items.length ? items : [el("li", { class: "empty" }, "no messages yet")]));
}

function renderEvents(events) {
  if (!changed("events", events)) return;
  const items = events.map((e) => el("li", { dataset: { event: e.event || "" } },
    el("span", { class: "dim ago", dataset: { ts: e.time || "" } }, ago(e.time)), " ", e.what || ""));
  document.getElementById("events").replaceChildren(
    ...(items.length ? items : [el("li", { class: "empty" }, "nothing recorded yet")]));
}

function gauge(label, section) {
  const limit = section.limit_gb || 0;
  const share = limit > 0 ? Math.min(1, section.declared_gb / limit) : 0;
  const fill = el("span", { class: share >= 0.9 ? "full" : share >= 0.7 ? "warn" : "" });
  fill.style.width = `${Math.round(share * 100)}%`;
  return el("div", { class: "gauge", dataset: { resource: label } },
    el("div", {}, el("b", {}, label), ` ${gb(section.declared_gb)} of ${gb(limit)} GiB declared · `
      + `agents use ${gb(section.agents_gb)} · free ${gb(section.free_gb)} · `
      + `machine ${gb(section.used_gb)}/${gb(section.total_gb)} GiB used`),
    el("div", { class: "bar" }, fill));
}

function renderBudgets(budgets, warnings) {
  if (!changed("budgets", [budgets, warnings])) return;
  document.getElementById("policy").textContent = `(policy ${budgets.policy})`;
  document.getElementById("budgets").replaceChildren(gauge("RAM", budgets.ram),
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
  document.body.dataset.generated = next.generated_at;
}

function tick() {
  for (const node of document.querySelectorAll(".ago[data-ts]")) node.textContent = ago(node.dataset.ts);
  for (const node of document.querySelectorAll(".until[data-ts]")) node.textContent = until(node.dataset.ts);
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

document.getElementById("send-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const body = document.getElementById("send-body");
  busy(document.getElementById("send-button"), act("send", {
    to: document.getElementById("send-to").value,
    body: body.value,
    urgent: document.getElementById("send-urgent").checked,
  }).then((ok) => { if (ok) body.value = ""; }));
});

document.getElementById("task-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const title = document.getElementById("task-title");
  const depends = document.getElementById("task-depends");
  busy(document.getElementById("task-button"), act("task", {
    title: title.value,
    body: document.getElementById("task-body").value,
    priority: Number(document.getElementById("task-priority").value || 0),
    review: document.getElementById("task-review").checked,
    depends: [...depends.selectedOptions].map((o) => o.value),
  }).then((ok) => { if (ok) { title.value = ""; document.getElementById("task-body").value = ""; } }));
});

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

document.getElementById("actor").textContent = ACTOR;
setInterval(tick, 1000);
connect();
