// One user, live: the audio level meter (0-100) and the last minute of levels, the listening
// indicator, the transcript as it arrives with speakers told apart, completed sessions with a
// WebVTT download, and sleep (the latest session's hypnogram and the stats).
//
// It first fixes where its stream starts: the last position seen (kept per user in
// sessionStorage, so a reload resumes there), else where the stream is now. Only then does it
// read the API, so what the API answers and what the stream brings after that position overlap
// rather than leave a gap between them (transcript.js drops the repeated lines). Then it follows
// GET /v1/stream for the user; the browser reconnecting after the worker restarted resumes with
// `Last-Event-ID`, without losing or repeating an event.

import { get, streamStart, withQuery } from "./api.js";
import { CHART_MS, drawLevels, hypnogram } from "./charts.js";
import { duration, h, heading, number, table, time } from "./dom.js";
import { Transcript } from "./transcript.js";

const STREAM_TYPES = "audio.level,listening.status,transcript.*,sleep.*";
/** How often the levels chart is redrawn, so it scrolls while no audio comes. */
const CHART_TICK_MS = 1000;
/** Asleep's epochs are 30 seconds long. */
const EPOCH_S = 30;

export function render(container, uid) {
  const view = layout(uid);
  container.append(view.root);
  const state = {
    levels: [],
    inference: { session: null, stages: [] },
    transcript: new Transcript(view.transcript),
    /** The stream has given a level / a listening state: the API's may be older. */
    levelLive: false,
    listeningLive: false,
    source: null,
    stopped: false,
  };
  // Its own line: the connection's line changes with every reconnect.
  const failed = (error) => (view.loadError.textContent = `Could not load: ${error.message}`);
  start(uid, view, state, failed).catch(failed);
  // The chart moves on with the clock, audio or not.
  const ticking = setInterval(() => drawChart(view, state), CHART_TICK_MS);
  return () => {
    state.stopped = true;
    clearInterval(ticking);
    if (state.source) state.source.close();
  };
}

/** Fixes the stream's position, then reads the API and follows the stream from there. */
async function start(uid, view, state, failed) {
  const key = positionKey(uid);
  const position = sessionStorage.getItem(key) || (await streamStart({ uid, types: STREAM_TYPES }));
  if (state.stopped) return;
  sessionStorage.setItem(key, position);
  state.source = follow(uid, position, view, state);
  loadLevels(uid, view, state).catch(failed);
  loadListening(uid, view, state).catch(failed);
  loadSessions(uid, view).catch(failed);
  loadSleep(uid, view, state).catch(failed);
  state.transcript.load(uid).catch(failed);
}

/** Where the last position seen of `uid`'s stream is kept. */
function positionKey(uid) {
  return `last-event-id:${uid}`;
}

function layout(uid) {
  const part = (id, title, ...children) =>
    h("article", { "aria-labelledby": `${id}-title` }, h("h3", { id: `${id}-title`, text: title }), ...children);
  const view = {
    connection: h("p", { id: "connection", class: "status", role: "status", "aria-live": "polite", text: "Connecting…" }),
    loadError: h("p", { id: "load-error", class: "error", role: "alert" }),
    listening: h("span", { id: "listening", class: "badge", text: "not listening" }),
    meter: h("meter", { id: "level", min: "0", max: "100", low: "20", high: "80", optimum: "50", value: "0" }),
    levelValue: h("span", { id: "level-value", text: "0" }),
    chart: h("canvas", { id: "levels", width: "600", height: "120", role: "img", "aria-label": "Audio level over the last minute" }),
    transcript: h("div", { id: "transcript", "aria-live": "polite" }, h("p", { class: "empty", text: "No line in an open or recent session yet." })),
    sessions: h("div", { id: "sessions" }),
    sleep: h("div", { id: "sleep" }, h("p", { class: "empty", text: "No sleep session yet." })),
  };
  view.root = h(
    "div",
    {},
    heading(`User ${uid}`),
    h("p", {}, h("a", { href: "#/users", text: "All users" })),
    view.connection,
    view.loadError,
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

function follow(uid, position, view, state) {
  const key = positionKey(uid);
  const params = { uid, types: STREAM_TYPES, last_event_id: position };
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
  on("audio.level", (body) => levelEvent(view, state, body.data));
  on("listening.status", (body) => {
    state.listeningLive = true;
    listening(view, body.data.isListening);
    // No audio comes while not listening: the meter falls to 0 rather than keep the last level.
    if (!body.data.isListening) showLevel(view, 0);
  });
  on("transcript.segment", (body) => state.transcript.segment(body.data));
  on("transcript.completed", (body) => {
    state.transcript.completed(body.data);
    loadSessions(uid, view);
  });
  on("sleep.inference", (body) => inference(view, state, body.data));
  on("sleep.session_completed", () => loadSleep(uid, view, state));
  return source;
}

async function loadLevels(uid, view, state) {
  const from = new Date(Date.now() - CHART_MS).toISOString();
  const page = await get(withQuery(`/v1/users/${encodeURIComponent(uid)}/audio-levels`, { from, limit: 1000 }));
  addWindows(state, page.items);
  if (!state.levelLive && page.items[0]) showLevel(view, page.items[0].level);
  drawChart(view, state);
}

/** An `audio.level` event: the meter shows its level, the chart gets each of its windows. */
function levelEvent(view, state, data) {
  addWindows(state, data.windows || [{ end: data.timestamp, level: data.audioLevel }]);
  state.levelLive = true;
  showLevel(view, data.audioLevel);
  drawChart(view, state);
}

function addWindows(state, windows) {
  for (const window of windows) state.levels.push([Date.parse(window.end), clamp(window.level)]);
}

function showLevel(view, value) {
  view.meter.value = clamp(value);
  view.levelValue.textContent = String(Math.round(clamp(value)));
}

/** The chart of the minute up to now (or the newest level, if this clock is behind). */
function drawChart(view, state) {
  const now = Math.max(Date.now(), ...state.levels.map(([t]) => t));
  state.levels = state.levels.filter(([t]) => t > now - CHART_MS);
  drawLevels(view.chart, state.levels, now);
}

function clamp(value) {
  return Math.max(0, Math.min(100, Number(value) || 0));
}

/** The listening state now, unless the stream has already said something newer. */
async function loadListening(uid, view, state) {
  const status = await get(`/v1/users/${encodeURIComponent(uid)}/listening`);
  if (!state.listeningLive) listening(view, status.listening);
}

function listening(view, on) {
  view.listening.textContent = on ? "listening" : "not listening";
  view.listening.classList.toggle("on", Boolean(on));
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
  if (!report && stages.length === 0) parts.push(h("p", { class: "empty", text: "No sleep session yet." }));
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
  return parts;
}
