// One user, live: the audio level meter (0-100) and the last minute of levels, the listening
// indicator, the transcript as it arrives with speakers told apart, completed sessions with a
// WebVTT download, and sleep (the latest session's hypnogram and the stats). It starts from the
// API and then follows GET /v1/stream for the user. The last position seen is kept per user
// (sessionStorage), so a reload, or the browser reconnecting after the worker restarted,
// resumes without losing or repeating an event.

import { get, withQuery } from "./api.js";
import { CHART_MS, drawLevels, hypnogram } from "./charts.js";
import { duration, h, heading, number, table, time } from "./dom.js";

const STREAM_TYPES = "audio.level,listening.status,transcript.*,sleep.*";
/** Asleep's epochs are 30 seconds long. */
const EPOCH_S = 30;

export function render(container, uid) {
  const view = layout(uid);
  container.append(view.root);
  const state = { levels: [], inference: { session: null, stages: [] } };
  const failed = (error) => (view.connection.textContent = `Could not load: ${error.message}`);
  loadLevels(uid, view, state).catch(failed);
  loadListening(uid, view).catch(failed);
  loadSessions(uid, view).catch(failed);
  loadSleep(uid, view, state).catch(failed);
  const source = follow(uid, view, state);
  return () => source.close();
}

function layout(uid) {
  const part = (id, title, ...children) =>
    h("article", { "aria-labelledby": `${id}-title` }, h("h3", { id: `${id}-title`, text: title }), ...children);
  const view = {
    connection: h("p", { id: "connection", class: "status", role: "status", "aria-live": "polite", text: "Connecting…" }),
    listening: h("span", { id: "listening", class: "badge", text: "not listening" }),
    meter: h("meter", { id: "level", min: "0", max: "100", low: "20", high: "80", optimum: "50", value: "0" }),
    levelValue: h("span", { id: "level-value", text: "0" }),
    chart: h("canvas", { id: "levels", width: "600", height: "120", role: "img", "aria-label": "Audio level over the last minute" }),
    transcript: h("ol", { id: "transcript", "aria-live": "polite" }),
    sessions: h("div", { id: "sessions" }),
    sleep: h("div", { id: "sleep" }, h("p", { text: "No sleep session yet." })),
  };
  view.root = h(
    "div",
    {},
    heading(`User ${uid}`),
    h("p", {}, h("a", { href: "#/users", text: "All users" })),
    view.connection,
    h(
      "div",
      { class: "grid" },
      part("audio", "Audio",
        h("p", {}, view.listening),
        h("label", { for: "level", text: "Level " }), view.meter, " ", view.levelValue,
        view.chart),
      part("sleep", "Sleep", view.sleep),
    ),
    part("transcript", "Transcript", view.transcript),
    part("sessions", "Completed sessions", view.sessions),
  );
  return view;
}

function follow(uid, view, state) {
  const key = `last-event-id:${uid}`;
  const params = { uid, types: STREAM_TYPES, last_event_id: sessionStorage.getItem(key) };
  const source = new EventSource(withQuery("/v1/stream", params));
  source.onopen = () => (view.connection.textContent = `Watching ${uid}.`);
  source.onerror = () => {
    view.connection.textContent =
      source.readyState === EventSource.CLOSED
        ? "The stream was refused: sign in again."
        : "Connection lost; reconnecting…";
    if (source.readyState === EventSource.CLOSED) window.dispatchEvent(new Event("signed-out"));
  };
  const on = (type, handle) =>
    source.addEventListener(type, (event) => {
      sessionStorage.setItem(key, event.lastEventId);
      handle(JSON.parse(event.data));
    });
  on("audio.level", (body) => level(view, state, body.data.audioLevel, body.data.timestamp || body.timestamp));
  on("listening.status", (body) => listening(view, body.data.isListening));
  on("transcript.segment", (body) => segment(view, body.data.segment || {}));
  on("transcript.completed", () => loadSessions(uid, view));
  on("sleep.inference", (body) => inference(view, state, body.data));
  on("sleep.session_completed", () => loadSleep(uid, view, state));
  return source;
}

async function loadLevels(uid, view, state) {
  const from = new Date(Date.now() - CHART_MS).toISOString();
  const page = await get(withQuery(`/v1/users/${encodeURIComponent(uid)}/audio-levels`, { from, limit: 1000 }));
  for (const window of page.items) state.levels.push([Date.parse(window.end), window.level ?? 0]);
  const newest = page.items[0];
  level(view, state, newest ? newest.level : 0, null);
}

async function loadListening(uid, view) {
  const status = await get(`/v1/users/${encodeURIComponent(uid)}/listening`);
  listening(view, status.listening);
}

function level(view, state, value, at) {
  const clamped = Math.max(0, Math.min(100, Number(value) || 0));
  view.meter.value = clamped;
  view.levelValue.textContent = String(Math.round(clamped));
  if (at) state.levels.push([Date.parse(at), clamped]);
  if (state.levels.length > 0) {
    const newest = Math.max(...state.levels.map(([t]) => t));
    state.levels = state.levels.filter(([t]) => t > newest - CHART_MS);
  }
  drawLevels(view.chart, state.levels);
}

function listening(view, on) {
  view.listening.textContent = on ? "listening" : "not listening";
  view.listening.classList.toggle("on", Boolean(on));
}

function segment(view, data) {
  const id = Number.isInteger(data.speaker_id) ? data.speaker_id : 0;
  const speaker = h("span", {
    class: `speaker speaker-${id % 4}`,
    text: data.is_user ? "You" : data.speaker || `Speaker ${id}`,
  });
  const item = h("li", { "data-speaker": String(id) }, speaker, data.text || "");
  view.transcript.append(item);
  // Only the list scrolls to its newest line; the page stays where the reader is.
  view.transcript.scrollTop = view.transcript.scrollHeight;
}

async function loadSessions(uid, view) {
  const page = await get(`/v1/users/${encodeURIComponent(uid)}/sessions?limit=20`);
  const completed = page.items.filter((session) => session.status === "completed");
  view.sessions.replaceChildren(
    table(
      [
        ["Title", (session) => session.title || session.external_id],
        ["Started", (session) => time(session.started_at)],
        ["Completed", (session) => time(session.completed_at)],
        ["Transcript", (session) =>
          h("a", {
            href: `/v1/sessions/${session.id}/transcript?format=vtt`,
            download: `${session.id}.vtt`,
            class: "vtt",
            text: "WebVTT",
          })],
      ],
      completed,
      "No completed session yet.",
    ),
  );
}

async function loadSleep(uid, view, state) {
  const path = `/v1/users/${encodeURIComponent(uid)}/sleep`;
  const [reports, stats] = await Promise.all([get(`${path}/reports?limit=1`), get(`${path}/stats`)]);
  const report = reports.items[0];
  if (report) state.inference = { session: null, stages: [] };
  view.sleep.replaceChildren(...sleepParts(report, stats, state.inference));
}

function inference(view, state, data) {
  const session = data.session_id || null;
  if (state.inference.session !== session) state.inference = { session, stages: [] };
  state.inference.stages.push(...(data.sleep_stages || []));
  view.sleep.replaceChildren(...sleepParts(null, null, state.inference));
}

function sleepParts(report, stats, live) {
  const parts = [];
  const stages = report ? (report.session && report.session.sleep_stages) || [] : live.stages;
  if (stages.length > 0) {
    const what = report ? `Sleep stages of session ${report.session_id}` : "Sleep stages so far";
    parts.push(h("p", { text: report ? `Session ${report.session_id}` : `Live: session ${live.session || "?"}` }));
    parts.push(hypnogram(stages, `${what}, ${stages.length} epochs of ${EPOCH_S} s`));
  }
  const facts = [];
  if (report) {
    facts.push(["From", time(report.start_time)], ["To", time(report.end_time)]);
    facts.push(["Asleep", duration(report.time_in_sleep_s)]);
    facts.push(["Efficiency", report.sleep_efficiency === null ? "—" : `${number(report.sleep_efficiency, 2)} %`]);
  }
  if (stats) {
    facts.push(["Sessions", number(stats.total_sessions)]);
    facts.push(["Total asleep", duration(stats.total_sleep_time_s)]);
    const average = stats.sleep_efficiency_avg_last_30;
    facts.push(["Efficiency, last 30", average === null ? "—" : `${number(average, 2)} %`]);
  }
  if (facts.length > 0) {
    parts.push(h("dl", { class: "facts", id: "sleep-stats" }, facts.map(([name, value]) => [h("dt", { text: name }), h("dd", { text: value })])));
  }
  return parts.length > 0 ? parts : [h("p", { text: "No sleep session yet." })];
}
