// The dashboard's script: signs in with the admin token (exchanged for a session cookie), then
// follows one user's events on GET /v1/stream. It calls only the management API, and keeps the
// last position it saw per user (sessionStorage), so a reload resumes without losing events.
"use strict";

const $ = (id) => document.getElementById(id);
const STREAM_TYPES = "audio.level,listening.status,transcript.*,sleep.*";
const CHART_MS = 60_000;

let source = null;
let levels = []; // [time in ms, level 0-100], the last CHART_MS

async function api(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let json = null;
  try {
    json = await response.json();
  } catch (_) {
    // 204 and the like have no body.
  }
  return { status: response.status, json };
}

function show(signedIn) {
  $("sign-in").hidden = signedIn;
  $("live").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  if (!signedIn) stop();
  (signedIn ? $("uid") : $("token")).focus();
}

async function begin() {
  const { status } = await api("GET", "/v1/auth/session");
  show(status === 200);
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { status, json } = await api("POST", "/v1/auth/session", { token: $("token").value });
  if (status === 200) {
    $("token").value = "";
    $("sign-in-error").textContent = "";
    show(true);
  } else {
    $("sign-in-error").textContent = (json && json.message) || `Sign-in failed (${status}).`;
  }
});

$("sign-out").addEventListener("click", async () => {
  await api("DELETE", "/v1/auth/session");
  show(false);
});

$("watch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const uid = $("uid").value.trim();
  if (uid) watch(uid);
});

function stop() {
  if (source) source.close();
  source = null;
}

function setStatus(text) {
  $("connection").textContent = text;
}

function watch(uid) {
  stop();
  reset();
  const key = `last-event-id:${uid}`;
  const params = new URLSearchParams({ uid, types: STREAM_TYPES });
  const last = sessionStorage.getItem(key);
  if (last) params.set("last_event_id", last);
  source = new EventSource(`/v1/stream?${params}`);
  source.onopen = () => setStatus(`Watching ${uid}.`);
  source.onerror = () => {
    if (source && source.readyState === EventSource.CLOSED) {
      setStatus("The stream was refused: sign in again.");
      begin();
    } else {
      setStatus("Connection lost; reconnecting…");
    }
  };
  const on = (type, handle) =>
    source.addEventListener(type, (event) => {
      sessionStorage.setItem(key, event.lastEventId);
      handle(JSON.parse(event.data));
    });
  on("audio.level", (body) => level(body.data.audioLevel, body.data.timestamp || body.timestamp));
  on("listening.status", (body) => listening(body.data.isListening));
  on("transcript.segment", (body) => segment(body.data.segment || {}));
  on("transcript.completed", (body) => completed(body.data));
  for (const type of ["sleep.inference", "sleep.session_completed"]) {
    on(type, (body) => sleep(type, body));
  }
}

function reset() {
  levels = [];
  $("transcript").replaceChildren();
  $("sleep-summary").textContent = "No sleep event yet.";
  listening(false);
  level(0, null);
}

function level(value, at) {
  const clamped = Math.max(0, Math.min(100, Number(value) || 0));
  $("level").value = clamped;
  $("level-value").textContent = String(Math.round(clamped));
  if (at) {
    const time = Date.parse(at);
    levels.push([time, clamped]);
    const newest = Math.max(...levels.map(([t]) => t));
    levels = levels.filter(([t]) => t > newest - CHART_MS);
  }
  draw();
}

function draw() {
  const canvas = $("levels");
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  context.strokeStyle = "#8888";
  context.strokeRect(0, 0, width, height);
  if (levels.length === 0) return;
  const newest = Math.max(...levels.map(([t]) => t));
  context.strokeStyle = "#27ae60";
  context.lineWidth = 2;
  context.beginPath();
  levels
    .slice()
    .sort((a, b) => a[0] - b[0])
    .forEach(([t, value], index) => {
      const x = width - ((newest - t) / CHART_MS) * width;
      const y = height - (value / 100) * height;
      if (index === 0) context.moveTo(x, y);
      else context.lineTo(x, y);
    });
  context.stroke();
}

function listening(on) {
  const badge = $("listening");
  badge.textContent = on ? "listening" : "not listening";
  badge.classList.toggle("on", Boolean(on));
}

function segment(data) {
  const item = document.createElement("li");
  const speaker = document.createElement("span");
  const id = Number.isInteger(data.speaker_id) ? data.speaker_id : 0;
  speaker.className = `speaker speaker-${id % 4}`;
  speaker.textContent = data.is_user ? "You" : data.speaker || `Speaker ${id}`;
  item.append(speaker, document.createTextNode(data.text || ""));
  $("transcript").append(item);
  item.scrollIntoView({ block: "nearest" });
}

function completed(data) {
  const item = document.createElement("li");
  item.append(document.createTextNode("Session completed. "));
  if (data && data.id) {
    const link = document.createElement("a");
    link.href = `/v1/sessions/${encodeURIComponent(data.id)}/transcript?format=vtt`;
    link.textContent = "WebVTT";
    link.download = `${data.id}.vtt`;
    item.append(link);
  }
  $("transcript").append(item);
}

function sleep(type, body) {
  const when = new Date(body.timestamp).toLocaleTimeString();
  $("sleep-summary").textContent = `${type} at ${when}: ${JSON.stringify(body.data).slice(0, 300)}`;
}

begin();
