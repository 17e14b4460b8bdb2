// sms-gateway phone: one conversation view per simulated user, an inspector of each engine turn; live updates
// arrive as server-sent events. Plain JavaScript: no build step, nothing fetched from elsewhere.
"use strict";

const OPTION_LINE = /^\s*(\d+)[.)]\s+(.*)$/;
const STATUS_LABELS = {
  sending: "Sending…", accepted: "Sent", rejected: "Not accepted", sent: "Sent", delivered: "Delivered",
  failed: "Failed",
};
const state = { users: [], tenants: [], bubbles: new Map(), turns: new Map(), failNextSend: {},
                user: null, tenant: null, attachments: [], pending: null, seq: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, body) {
  const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error?.message || `${response.status} ${response.statusText}`);
  return answer;
}

function tenantView() { return state.tenants.find((t) => t.number === state.tenant); }

// ---------------------------------------------------------------------------------------------- rendering
function renderUsers() {
  const list = $("users");
  list.replaceChildren(...state.users.map((user) => {
    const selected = user === state.user;
    const tab = el("button", { type: "button", role: "tab", "aria-selected": String(selected),
                               "aria-controls": "phone", tabindex: selected ? "0" : "-1", text: user });
    tab.addEventListener("click", () => selectUser(user));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = state.users[(state.users.indexOf(user) + step + state.users.length) % state.users.length];
      selectUser(next);
      list.querySelector('[aria-selected="true"]').focus();
    });
    return tab;
  }));
}

function renderTenants() {
  $("tenant").replaceChildren(...state.tenants.map((t) => el("option", {
    value: t.number, text: `${t.number} via ${t.provider_name}${t.description ? " (" + t.description + ")" : ""}` })));
  $("tenant").value = state.tenant;
}

function selectUser(user) {
  state.user = user;
  renderUsers();
  renderConversation();
}

function inView(item) { return item.user === state.user && item.tenant === state.tenant; }

function renderConversation() {
  const view = tenantView();
  $("inspector-note").textContent = "";
  $("phone-title").textContent = `${state.user} ↔ ${state.tenant}${view ? " via " + view.provider_name : ""}`;
  $("messages").replaceChildren(...[...state.bubbles.values()].filter(inView).map(bubbleNode));
  $("turns").replaceChildren(...[...state.turns.values()].filter(inView).map(turnNode));
  renderFailNext();
  scrollDown();
}

function scrollDown() {
  $("messages").scrollTop = $("messages").scrollHeight;
  $("turns").scrollTop = $("turns").scrollHeight;
}

function bubbleNode(bubble) {
  const node = el("li", { class: `bubble ${bubble.direction}`, "data-id": bubble.bubble_id,
                          "data-status": bubble.status });
  const parts = bubble.direction === "to_user" ? bubble.segments : [bubble.text];
  parts.forEach((part, index) => {
    if (!part) return;
    const segment = el("div", { class: "segment" });
    if (parts.length > 1) {
      segment.append(el("span", { class: "marker", text: `segment ${index + 1}/${parts.length}` }));
    }
    segment.append(...textWithOptions(part, bubble.direction === "to_user"));
    node.append(segment);
  });
  for (const url of bubble.media) {
    const img = el("img", { src: url, alt: "picture in the message", loading: "lazy" });
    img.addEventListener("error", () => img.replaceWith(el("a", { href: url, text: url, target: "_blank",
                                                                   rel: "noreferrer" })));
    node.append(img);
  }
  const label = STATUS_LABELS[bubble.status] || bubble.status;
  node.append(el("span", { class: "status", text: bubble.detail ? `${label}: ${bubble.detail}` : label }));
  return node;
}

// Numbered lines ("1. Red", "2) Green") of a reply become buttons that answer with their number.
function textWithOptions(text, tappable) {
  if (!tappable) return [text];
  const nodes = [];
  let plain = [];
  const flush = () => { if (plain.length) nodes.push(document.createTextNode(plain.join("\n"))); plain = []; };
  for (const line of text.split("\n")) {
    const match = OPTION_LINE.exec(line);
    if (!match) { plain.push(line); continue; }
    flush();
    const button = el("button", { type: "button", class: "option", "aria-label": `Answer ${match[1]}: ${match[2]}`,
                                  text: `${match[1]}. ${match[2]}` });
    button.addEventListener("click", () => send(match[1], []));
    nodes.push(button);
  }
  flush();
  return nodes;
}

function pre(value) { return el("pre", { text: JSON.stringify(value, null, 2) }); }

function turnNode(turn) {
  const number = [...state.turns.values()].filter(inView).indexOf(turn) + 1;
  const node = el("li", { class: "turn", "data-id": turn.turn_id });
  node.append(el("h3", { text: `Turn ${number}: ${JSON.stringify(turn.text)}` }));
  const parts = el("div", { class: "parts" });
  parts.append(el("section", {}, el("h4", { text: "State variables the engine received" }), pre(turn.state)));
  parts.append(el("section", {}, el("h4", { text: "Engine's answer" }),
                  turn.error ? el("p", { class: "refused", text: turn.error }) : pre(turn.answer)));
  parts.append(el("section", {}, el("h4", { text: "Commands" }),
                  turn.commands.length ? pre(turn.commands) : el("p", { text: "none" })));
  const sent = el("section", {}, el("h4", { text: "Sent to the provider" }));
  if (!turn.provider.length) sent.append(el("p", { text: "nothing yet" }));
  for (const request of turn.provider) {
    if (request.refused) sent.append(el("p", { class: "refused", text: "refused by the provider:" }));
    sent.append(pre(request.request));
  }
  parts.append(sent);
  node.append(parts);
  return node;
}

function renderFailNext() {
  const view = tenantView();
  const on = Boolean(view && state.failNextSend[view.provider]);
  $("fail-next").setAttribute("aria-pressed", String(on));
  $("fail-next").textContent = on ? "The next send will fail (click to cancel)"
                                  : "Make the provider fail the next send";
}

function upsert(map, id, item, render, container) {
  const existing = container.querySelector(`[data-id="${id}"]`);
  map.set(id, item);
  if (!inView(item)) return;
  const node = render(item);
  if (existing) existing.replaceWith(node); else container.append(node);
  scrollDown();
}

function onEvent(event) {
  if (state.pending) { state.pending.push(event); return; }  // applied once the snapshot being loaded is in
  if (event.seq <= state.seq) return;  // the snapshot has it already
  state.seq = event.seq;
  if (event.kind === "bubble") {
    const bubble = event.bubble;
    if (!state.users.includes(bubble.user)) { state.users.push(bubble.user); renderUsers(); }
    if (bubble.status === "failed") {
      const view = state.tenants.find((t) => t.number === bubble.tenant);
      if (view) { state.failNextSend[view.provider] = false; renderFailNext(); }
    }
    upsert(state.bubbles, bubble.bubble_id, bubble, bubbleNode, $("messages"));
  } else if (event.kind === "turn") {
    upsert(state.turns, event.turn.turn_id, event.turn, turnNode, $("turns"));
  }
}

async function load() {
  state.pending = [];
  let snapshot;
  try {
    snapshot = await (await fetch("/api/state")).json();
  } finally {
    const pending = state.pending;
    state.pending = null;
    if (snapshot) applySnapshot(snapshot);
    pending.forEach(onEvent);
  }
}

function applySnapshot(snapshot) {
  state.seq = snapshot.seq;
  state.users = [...new Set([...snapshot.users, ...state.users])];  // with users added here, not texted yet
  state.tenants = snapshot.tenants;
  state.failNextSend = snapshot.failNextSend;
  state.bubbles = new Map(snapshot.bubbles.map((b) => [b.bubble_id, b]));
  state.turns = new Map(snapshot.turns.map((t) => [t.turn_id, t]));
  state.user = state.user || state.users[0];
  state.tenant = state.tenant || state.tenants[0].number;
  renderUsers();
  renderTenants();
  renderConversation();
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { $("connection").textContent = "live"; load(); });
  source.addEventListener("message", (message) => onEvent(JSON.parse(message.data)));
  source.addEventListener("error", () => { $("connection").textContent = "reconnecting…"; });
}

// ---------------------------------------------------------------------------------------------- actions
async function send(text, media) {
  $("composer-error").textContent = "";
  try {
    await api("/api/send", { user: state.user, tenant: state.tenant, text, media });
    return true;
  } catch (error) {
    $("composer-error").textContent = error.message;
    return false;
  }
}

function renderAttachments() {
  $("attachments").replaceChildren(...state.attachments.map((item, index) => {
    const remove = el("button", { type: "button", "aria-label": `Remove picture ${index + 1}`, text: "×" });
    remove.addEventListener("click", () => { state.attachments.splice(index, 1); renderAttachments(); });
    return el("li", {}, el("img", { src: item.url, alt: `picture ${index + 1} to send` }), remove);
  }));
}

async function uploadFile() {
  const file = $("file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  $("composer-error").textContent = "";
  const response = await fetch("/api/upload", { method: "POST", body: form });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) { $("composer-error").textContent = answer.error?.message || "the upload failed"; return; }
  state.attachments.push(answer);
  $("file").value = "";
  renderAttachments();
}

function addUrl() {
  const url = $("media-url").value.trim();
  if (!/^https?:\/\//.test(url)) { $("composer-error").textContent = "a picture URL starts with http(s)://"; return; }
  state.attachments.push({ url });
  $("media-url").value = "";
  renderAttachments();
}

async function submit(event) {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim() && !state.attachments.length) return;
  if (await send(text, state.attachments)) {
    $("text").value = "";
    state.attachments = [];
    renderAttachments();
  }
  $("text").focus();
}

function setup() {
  $("composer").addEventListener("submit", submit);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) $("composer").requestSubmit();
  });
  $("file").addEventListener("change", uploadFile);
  $("add-url").addEventListener("click", addUrl);
  $("media-url").addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); addUrl(); }
  });
  $("tenant").addEventListener("change", () => { state.tenant = $("tenant").value; renderConversation(); });
  $("add-user").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = $("new-user").value.replace(/[^\d+]/g, "");
    if (!state.users.includes(user)) state.users.push(user);
    $("new-user").value = "";
    selectUser(user);
  });
  $("fail-next").addEventListener("click", async () => {
    const view = tenantView();
    const on = !state.failNextSend[view.provider];
    const answer = await api("/api/fail-next-send", { tenant: state.tenant, on });
    state.failNextSend[view.provider] = answer.failNextSend;
    renderFailNext();
    $("inspector-note").textContent = answer.failNextSend
      ? `${view.provider_name} will refuse the next message the gateway sends.` : "";
  });
  $("time-out").addEventListener("click", async () => {
    try {
      const answer = await api("/api/time-out", { user: state.user, tenant: state.tenant });
      $("inspector-note").textContent = `Session ${answer.smsSessionID} timed out; the next message starts a new one.`;
    } catch (error) {
      $("inspector-note").textContent = error.message;
    }
  });
  connect();
}

document.addEventListener("DOMContentLoaded", setup);
