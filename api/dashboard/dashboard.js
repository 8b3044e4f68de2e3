// The dashboard's one script: API calls with the user's token, and the watch stream read with
// fetch (EventSource cannot send an Authorization header).
"use strict";

const TOKEN_KEY = "loraplane-token";

function token() { return localStorage.getItem(TOKEN_KEY); }

function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

function text(value) { return value === undefined || value === null || value === "" ? "-" : String(value); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : text(child));
  return node;
}

function showLogin(message) {
  const box = document.getElementById("login");
  box.hidden = false;
  document.getElementById("login-message").textContent = message;
  document.getElementById("login-form").onsubmit = (event) => {
    event.preventDefault();
    localStorage.setItem(TOKEN_KEY, document.getElementById("login-token").value.trim());
    location.reload();
  };
}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  if (response.status === 401 || response.status === 403) {
    const problem = await response.json();
    showLogin(problem.detail);
    throw new Error(problem.detail);
  }
  if (!response.ok) throw new Error((await response.json()).detail || response.statusText);
  return response.json();
}

// Calls onEvent(type, object) for each server-sent event; reconnects when the stream ends.
async function watch(path, onEvent) {
  const live = document.getElementById("live");
  for (;;) {
    try {
      const response = await fetch(path + (path.includes("?") ? "&" : "?") + "watch=1", { headers: headers() });
      if (!response.ok) { live.textContent = "not live: " + response.status; return; }
      live.textContent = "live";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("");
          if (data) { const event = JSON.parse(data); onEvent(event.type, event.object); }
        }
      }
    } catch (error) {
      live.textContent = "reconnecting";
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function condition(item, type) {
  return ((item.status || {}).conditions || []).find((c) => c.type === type);
}

function deploymentRow(item) {
  const status = item.status || {};
  const ready = condition(item, "Ready");
  const name = item.metadata.name;
  return el("tr", { "data-name": name },
    el("td", {}, el("a", { href: "/ui/deployments/" + encodeURIComponent(name) }, name)),
    el("td", {}, item.spec.target),
    el("td", { class: "phase phase-" + text(status.phase) }, text(status.phase)),
    el("td", {}, ready ? ready.status : "-"),
    el("td", { class: "mono" }, text(status.endpoint)),
    el("td", { class: "mono" }, servingText(status)),
    el("td", {}, costText(status.cost)),
    el("td", { class: "muted" }, text(status.message)));
}

// GPU-hours this month, the estimated cost where a price is known, and a budget's standing.
function costText(cost) {
  if (!cost) return "-";
  const estimate = cost.estimatedCostThisMonth == null ? "" : " (" + (cost.currency || "") + " " + cost.estimatedCostThisMonth.toFixed(2) + ")";
  const budget = cost.budget ? " · " + Math.round(100 * cost.budget.fraction) + "% of " + cost.budget.limit : "";
  return cost.gpuHoursThisMonth.toFixed(2) + estimate + budget;
}

// What serves: the one adapter's version, or each adapter's by name (with a canary's share).
function servingText(status) {
  const adapters = status.adapters || [];
  const canary = (a) => (a.canary ? " (canary " + a.canary.version + " " + a.canary.weight + "%)" : "");
  if (adapters.length > 1) return adapters.map((a) => a.name + " " + text(a.servingVersion) + canary(a)).join(", ");
  return text((status.adapter || {}).servingVersion) + canary(status.adapter || {});
}

// One side of a canary: its requests, errors and mean latency since it began.
function sideText(side) {
  const latency = side.meanLatencyMs == null ? "" : ", mean " + Math.round(side.meanLatencyMs) + " ms";
  return side.version + ": " + side.requests + " requests, " + side.errors + " errors (" + (100 * side.errorRate).toFixed(1) + "%)" + latency;
}

// A canary's progress: its share, the time left, the figures of both sides.
function canaryText(canary) {
  if (!canary) return "-";
  const left = Math.max(0, Math.round((Date.parse(canary.endsAt) - Date.now()) / 1000));
  return canary.weight + "% to " + canary.version + ", " + left + " s left · " + sideText(canary.canary) + " · stable " + sideText(canary.stable);
}

// A version's gate: passed or failed, and its pass rate.
function gateText(gate) {
  return gate ? (gate.passed ? "passed " : "failed ") + Math.round(100 * gate.passRate) + "%" : "-";
}

async function listPage() {
  const body = document.getElementById("deployments");
  const rows = new Map();
  const put = (item) => {
    const row = deploymentRow(item);
    const old = rows.get(item.metadata.name);
    if (old) old.replaceWith(row); else body.append(row);
    rows.set(item.metadata.name, row);
    document.getElementById("empty").hidden = rows.size > 0;
  };
  const first = await api("/v1/deployments");
  first.items.forEach(put);
  document.getElementById("empty").hidden = rows.size > 0;
  watch("/v1/deployments", (type, object) => {
    if (type === "DELETED") {
      const row = rows.get(object.metadata.name);
      if (row) row.remove();
      rows.delete(object.metadata.name);
    } else put(object);
  });
}

function fill(id, rows) {
  const body = document.getElementById(id);
  body.replaceChildren(...rows);
}

async function detailPage() {
  const name = decodeURIComponent(location.pathname.split("/").pop());
  document.getElementById("name").textContent = name;
  document.title = name + " · loraplane";
  const show = async (item) => {
    const status = item.status || {};
    fill("summary", [deploymentRow(item)]);
    fill("conditions", (status.conditions || []).map((c) =>
      el("tr", {}, el("td", {}, c.type), el("td", {}, c.status), el("td", {}, c.reason), el("td", { class: "muted" }, c.message))));
    const events = await api("/v1/deployments/" + encodeURIComponent(name) + "/events?limit=30");
    fill("events", events.items.map((e) =>
      el("tr", {}, el("td", { class: "muted" }, e.lastTimestamp.slice(0, 19).replace("T", " ")), el("td", {}, e.type),
        el("td", {}, e.reason), el("td", {}, e.count), el("td", {}, e.message))));
    const each = status.adapters || [];
    fill("adapter-status", each.map((a) => {
      const rollout = a.lastRollout || {};
      return el("tr", {}, el("td", {}, a.name), el("td", { class: "mono" }, text(a.desiredVersion)),
        el("td", { class: "mono" }, text(a.servingVersion)),
        el("td", { class: "muted" }, rollout.version ? rollout.version + " " + text(rollout.result) : "-"),
        el("td", { class: "muted" }, canaryText(a.canary)));
    }));
    const servingOf = new Map(each.map((a) => [a.name, a.servingVersion]));
    const adapters = await api("/v1/deployments/" + encodeURIComponent(name) + "/adapters");
    fill("adapters", adapters.items.map((v) =>
      el("tr", {}, el("td", {}, v.adapter), el("td", { class: "mono" }, v.version), el("td", {}, v.state),
        el("td", {}, v.version === (servingOf.get(v.adapter) ?? (status.adapter || {}).servingVersion) ? "serving" : ""),
        el("td", {}, gateText(v.gate)),
        el("td", { class: "muted" }, v.detectedAt.slice(0, 19).replace("T", " ")), el("td", { class: "muted" }, v.message))));
  };
  // Who uses the GPU: each key's limits and what it used, summed over the replicas (refreshed
  // every 15 s: the replicas report to the share every few seconds, which no watch sees).
  const showKeys = async () => {
    const note = document.getElementById("keys-note");
    // Not through api(): a viewer's 403 here is no reason to ask for another token.
    const response = await fetch("/v1/deployments/" + encodeURIComponent(name) + "/keys", { headers: headers() });
    if (!response.ok) {
      fill("keys", []);
      note.textContent = response.status === 403 ? "Keys are shown to the deployer role or above." : (await response.json()).detail;
      return;
    }
    const keys = await response.json();
    note.textContent = keys.usageNote || (keys.items.length ? "" : "No inference keys (loraplane keys create --deployment " + name + " --name WHO).");
    const used = (k, f) => (k.usage ? String(f(k.usage)) : "?");
    fill("keys", keys.items.map((k) =>
      el("tr", {}, el("td", { class: "mono" }, k.name), el("td", {}, String(k.rpm || "-")), el("td", {}, String(k.tpm || "-")),
        el("td", { class: "muted" }, k.expiresAt ? k.expiresAt.slice(0, 19).replace("T", " ") : "never"),
        el("td", {}, used(k, (u) => u.requests)), el("td", {}, used(k, (u) => u.promptTokens + u.completionTokens)),
        el("td", {}, used(k, (u) => u.refused)))));
  };
  await show(await api("/v1/deployments/" + encodeURIComponent(name)));
  await showKeys();
  setInterval(() => showKeys().catch(() => {}), 15000);
  watch("/v1/deployments/" + encodeURIComponent(name), (type, object) => {
    if (type === "DELETED") document.getElementById("live").textContent = "deleted";
    else show(object);
  });
}

window.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page === "deployment" ? detailPage : listPage;
  page().catch((error) => { document.getElementById("error").textContent = error.message; });
});
