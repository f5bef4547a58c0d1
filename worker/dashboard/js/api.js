// The management API and /metrics, as the dashboard reads them. Requests carry the session
// cookie (same origin); a 401 anywhere tells the page to sign in again ("signed-out" event).

export class ApiError extends Error {
  constructor(status, json) {
    super((json && json.message) || `the request failed (${status})`);
    this.status = status;
    this.json = json;
  }
}

/** `method path` with an optional JSON body: `{status, json}`, json null when there is none. */
export async function request(method, path, body) {
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
  if (response.status === 401 && !path.startsWith("/v1/auth/")) {
    window.dispatchEvent(new Event("signed-out"));
  }
  return { status: response.status, json };
}

/** `GET path`: its JSON, or an ApiError. */
export async function get(path) {
  const { status, json } = await request("GET", path);
  if (status !== 200) throw new ApiError(status, json);
  return json;
}

/** `POST path`: its JSON, or an ApiError for anything but a 2xx. */
export async function post(path) {
  const { status, json } = await request("POST", path);
  if (status < 200 || status > 299) throw new ApiError(status, json);
  return json;
}

/** A path with its query built from `params` (entries whose value is null are left out). */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** The samples of this worker's /metrics: [{name, labels: {..}, value}]. */
export async function metrics() {
  const response = await fetch("/metrics", { credentials: "same-origin" });
  if (!response.ok) throw new ApiError(response.status, null);
  return parseExposition(await response.text());
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Prometheus text format into samples; comments and unreadable lines are skipped. */
export function parseExposition(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const match = SAMPLE.exec(line);
    if (!match || line.startsWith("#")) continue;
    const labels = {};
    for (const [, name, value] of (match[2] || "").matchAll(LABEL)) labels[name] = value;
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** The sum of the samples named `name` whose labels include `labels`; null when none is. */
export function total(samples, name, labels = {}) {
  const matching = samples.filter(
    (sample) =>
      sample.name === name &&
      Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
  );
  if (matching.length === 0) return null;
  return matching.reduce((sum, sample) => sum + sample.value, 0);
}

/**
 * Where `GET /v1/stream` with `params` starts now: the position of its first frame (the `id:`
 * a stream opened without one sends before anything else). An `EventSource` does not hand that
 * frame to the page, so it is read here with `fetch`, and the request is ended right after.
 * Every event at or before it was committed before it was answered, so anything read from the
 * API after this resolves has those events, and a stream resumed from it has every later one.
 */
export async function streamStart(params) {
  const abort = new AbortController();
  const response = await fetch(withQuery("/v1/stream", params), {
    credentials: "same-origin",
    signal: abort.signal,
  });
  if (response.status === 401) window.dispatchEvent(new Event("signed-out"));
  if (!response.ok) throw new ApiError(response.status, null);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the stream ended before it said where it starts");
      text += value;
      const position = firstId(text);
      if (position) return position;
    }
  } finally {
    abort.abort();
  }
}

/** The `id:` of the first complete frame of SSE `text` that has one (comments skipped). */
function firstId(text) {
  const frames = text.replaceAll("\r\n", "\n").split("\n\n");
  for (const frame of frames.slice(0, -1)) {
    const line = frame.split("\n").find((field) => field.startsWith("id:"));
    if (line) return line.slice(3).trim();
  }
  return null;
}
