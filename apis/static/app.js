// The status page and playground. Plain browser JavaScript, no build step; it uses only the public
// API: GET /health, GET /status, GET /v1/models and POST /v1/chat/completions (streamed over SSE).
// Everything from the server is written with textContent, never as HTML.
"use strict";

const REFRESH_MS = 3000;
const KEY_STORE = "bingapi.key";
const $ = (id) => document.getElementById(id);

const chat = { messages: [], controller: null };

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function text(id, value) {
  $(id).textContent = value;
}

function fill(list, entries) {
  list.replaceChildren(
    ...entries.map(([name, count]) => {
      const item = document.createElement("li");
      item.textContent = `${name}: ${count}`;
      return item;
    })
  );
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "–" : String(value);
  if (className) td.className = className;
  row.append(td);
  return td;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 90) return `${value} s`;
  if (value < 5400) return `${Math.round(value / 60)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

async function errorOf(response) {
  // The OpenAI envelope {"error": {message, type, param, code}}, or what there is instead.
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) {
    /* not JSON */
  }
  return { message: response.statusText || "request failed", code: null };
}

// ---- service, accounts, recent requests ----

async function loadHealth() {
  const response = await fetch("/health");
  const health = await response.json();
  text("version", `version ${health.version}`);
  const up = health.upstream;
  const counts = (name) => {
    const u = (health.upstreams || {})[name];
    return u ? ` · ${u.usable}/${u.accounts} accounts can serve` : "";
  };
  text("upstream", `Bing: ${up.create_host} (create), ${up.chathub_host} (ChatHub)${counts("bing")}; ` +
    `Copilot: ${up.copilot_host}${counts("copilot")}${up.demo ? " · demo: the built-in emulator" : ""}`);
  const badge = $("service-status");
  const reasons = health.reasons && health.reasons.length ? health.reasons.join("; ") : "no account can serve";
  badge.textContent = health.status === "ok" ? "can answer" : `degraded: ${reasons}`;
  badge.className = `badge ${health.status}`;
  const shared = health.shared_state || { backend: "memory" };
  text("shared-state", shared.backend === "redis"
    ? `Redis: ${shared.status}${shared.reason ? ` (${shared.reason})` : ""}`
    : "in this process (no REDIS_URL)");
}

function showAccounts(accounts) {
  const rows = accounts.map((account) => {
    const row = document.createElement("tr");
    row.dataset.account = account.name;
    cell(row, account.name);
    cell(row, account.upstream);
    const state = document.createElement("span");
    state.className = `badge state-${account.state}`;
    state.textContent = account.state;
    cell(row, null, "state").replaceChildren(state);
    cell(row, account.usable ? "yes" : "no");
    cell(row, account.retry_in === null ? "–" : seconds(account.retry_in));
    return row;
  });
  $("accounts").tBodies[0].replaceChildren(...rows);
}

function showRecent(recent) {
  text("recent-window", `(last ${Math.round(recent.window_seconds / 60)} min)`);
  text("recent-total", String(recent.total));
  fill($("recent-status"), Object.entries(recent.by_status));
  fill($("recent-errors"), Object.entries(recent.by_error));
  fill($("recent-models"), Object.entries(recent.by_model));
  const rows = recent.latest.map((entry) => {
    const row = document.createElement("tr");
    cell(row, entry.model);
    cell(row, entry.account);
    cell(row, entry.status);
    cell(row, entry.error);
    cell(row, entry.ttft_ms === null ? null : `${entry.ttft_ms} ms`);
    cell(row, `${entry.total_ms} ms`);
    cell(row, entry.request_id.slice(0, 12), "small").title = entry.request_id;
    return row;
  });
  $("latest").tBodies[0].replaceChildren(...rows);
}

async function loadStatus() {
  const response = await fetch("/status", { headers: authHeaders() });
  const problem = $("status-error");
  if (!response.ok) {
    const error = await errorOf(response);
    problem.textContent = response.status === 401
      ? `This service needs an API key (API_KEYS is set): ${error.message}`
      : `${response.status} ${error.code || ""}: ${error.message}`;
    problem.hidden = false;
    return false;
  }
  problem.hidden = true;
  const status = await response.json();
  text("uptime", seconds(Math.round(status.uptime_seconds)));
  const failure = status.last_failure;
  text("last-failure", failure ? `${failure.code} at ${new Date(failure.at * 1000).toLocaleTimeString()}` : "none");
  showAccounts(status.accounts);
  showRecent(status.recent);
  return true;
}

async function loadModels() {
  const select = $("model");
  const response = await fetch("/v1/models", { headers: authHeaders() });
  if (!response.ok) return;
  const models = (await response.json()).data;
  const chosen = select.value;
  select.replaceChildren(
    ...models.map((model) => {
      const option = document.createElement("option");
      option.value = model.id;
      option.textContent = model.id;
      option.title = model.description || "";
      return option;
    })
  );
  select.value = models.some((m) => m.id === chosen) ? chosen : models.some((m) => m.id === "balanced") ? "balanced" : models[0].id;
}

async function refresh() {
  try {
    await Promise.all([loadHealth(), loadStatus()]);
    if (!$("model").options.length) await loadModels();
  } catch (error) {
    const problem = $("status-error");
    problem.textContent = `The service did not answer: ${error.message}`;
    problem.hidden = false;
  }
}

// ---- the playground ----

function addMessage(role, content) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = content;
  $("transcript").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function showError(status, error, inBand) {
  text("error-status", inBand ? "Error in the stream" : `HTTP ${status}`);
  text("error-code", error.code || error.type || "");
  text("error-where", inBand ? "(after the answer had started; the text above is incomplete)" : "");
  text("error-message", error.message || "");
  $("error").dataset.code = error.code || "";
  $("error").dataset.status = inBand ? "in-band" : String(status);
  $("error").hidden = false;
}

function busy(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
}

async function readStream(response, bubble) {
  // SSE over fetch: `data: <json>` lines, `: ping` comments, then `data: [DONE]`.
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let answer = "";
  let finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return { answer, finish };
      const chunk = JSON.parse(data);
      if (chunk.error) {
        showError(200, chunk.error, true);
        return { answer, finish: "error" };
      }
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      if (choice.delta && choice.delta.content) {
        answer += choice.delta.content;
        bubble.textContent = answer;
        bubble.scrollIntoView({ block: "end" });
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  return { answer, finish: finish || "cut" };
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || chat.controller) return;
  $("error").hidden = true;
  addMessage("user", prompt);
  $("prompt").value = "";
  const messages = [...chat.messages, { role: "user", content: prompt }];
  chat.controller = new AbortController();
  busy(true);
  const bubble = addMessage("assistant streaming", "");
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({ model: $("model").value, messages, stream: true }),
      signal: chat.controller.signal,
    });
    text("request-id", `request id ${response.headers.get("X-Request-ID") || "–"}`);
    if (!response.ok) {
      bubble.remove();
      showError(response.status, await errorOf(response), false);
      return;
    }
    const { answer, finish } = await readStream(response, bubble);
    const note = document.createElement("span");
    note.className = "finish";
    note.textContent = `finish: ${finish}`;
    bubble.append(note);
    bubble.dataset.finish = finish;
    if (finish === "stop") chat.messages = [...messages, { role: "assistant", content: answer }];
  } catch (error) {
    if (error.name !== "AbortError") showError(0, { message: error.message, code: "network_error" }, false);
    bubble.dataset.finish = "stopped";
  } finally {
    bubble.classList.remove("streaming");
    chat.controller = null;
    busy(false);
    refresh();
  }
}

function setup() {
  text("base-url", `${location.origin}/v1`);
  $("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
    $("model").replaceChildren();
    refresh();
  });
  $("chat-form").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) send(event);
  });
  $("stop").addEventListener("click", () => chat.controller && chat.controller.abort());
  $("new-chat").addEventListener("click", () => {
    chat.messages = [];
    $("transcript").replaceChildren();
    $("error").hidden = true;
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", setup);
