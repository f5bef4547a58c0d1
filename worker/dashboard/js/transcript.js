// A user's transcript, one section per session: the lines the user's open and recent sessions
// already have (GET /v1/users/{uid}/sessions, then /v1/sessions/{id}/transcript), then the
// lines as they arrive (`transcript.segment` on the stream).
//
// No gap and no repeat where the two meet: the page reads the API only after the stream's
// position is fixed (user.js), so a line is in the API's answer, or after that position in the
// stream, or both. Lines that arrive while the API is read wait for it, and a line is shown
// once by its key (session, start, end, text): the API's segments carry no id the stream's
// also have. The price: two segments of one session with the same times and text (stored
// apart when they came with different ids) show as one line.

import { get } from "./api.js";
import { h } from "./dom.js";

/** Sessions listed to look for recent ones. */
const LISTED = 5;
/** A completed session is still shown when its last line is younger than this. */
const RECENT_MS = 60 * 60 * 1000;

export class Transcript {
  constructor(container) {
    this.container = container;
    this.seen = new Set();
    /** Stream lines that came before the API's answer; null once it is in. */
    this.waiting = [];
    /** The section of each session shown, by session id. */
    this.sections = new Map();
  }

  /** Shows the lines of `uid`'s open and recent sessions, then the stream's lines that waited. */
  async load(uid) {
    try {
      for (const session of await recentSessions(uid)) {
        const transcript = await get(`/v1/sessions/${session.id}/transcript`);
        const section = this.section(session.id, session.title || session.external_id);
        markCompleted(section, session.status === "completed");
        for (const segment of transcript.segments) this.show(fromApi(session.id, segment));
      }
    } finally {
      const waiting = this.waiting;
      this.waiting = null;
      for (const line of waiting) this.show(line);
    }
  }

  /** A `transcript.segment` event's data. */
  segment(data) {
    const line = fromStream(data);
    if (this.waiting) this.waiting.push(line);
    else this.show(line);
  }

  /** A `transcript.completed` event's data (the Reflector shape: `id` is the session's). */
  completed(data) {
    const section = this.sections.get(data.id);
    if (section) markCompleted(section, true);
  }

  show(line) {
    const key = JSON.stringify([line.session, line.start, line.end, line.text]);
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const id = Number.isInteger(line.speakerIndex) ? line.speakerIndex : 0;
    const speaker = h("span", { class: `speaker speaker-${id % 4}`, text: speakerName(line) });
    const list = this.section(line.session, line.sessionName).querySelector("ol");
    list.append(h("li", { "data-speaker": String(id) }, speaker, line.text));
    // Only the transcript's box scrolls to its newest line; the page stays where the reader is.
    this.container.scrollTop = this.container.scrollHeight;
  }

  /** The section of session `id`, added at the end when it is not shown yet. */
  section(id, name) {
    let section = this.sections.get(id);
    if (!section) {
      const title = h("h4", {}, `Session ${name || id}`, h("span", { class: "session-state" }));
      section = h("section", { class: "session", "data-session": id }, title, h("ol"));
      this.sections.set(id, section);
      this.container.querySelector(".empty")?.remove();
      this.container.append(section);
    }
    return section;
  }
}

/** The user's open sessions and those completed within [`RECENT_MS`], oldest first. */
async function recentSessions(uid) {
  const page = await get(`/v1/users/${encodeURIComponent(uid)}/sessions?limit=${LISTED}`);
  const recent = (session) =>
    session.status === "open" || Date.now() - Date.parse(session.last_segment_at) < RECENT_MS;
  return page.items.filter(recent).reverse();
}

function markCompleted(section, completed) {
  section.querySelector(".session-state").textContent = completed ? " (completed)" : " (open)";
}

/** A segment of `GET /v1/sessions/{id}/transcript`. */
function fromApi(session, segment) {
  return {
    session,
    start: segment.start,
    end: segment.end,
    text: segment.text,
    speakerIndex: segment.speaker_index,
    label: segment.speaker,
    name: segment.speaker_name,
    isUser: segment.is_user,
  };
}

/** The data of a `transcript.segment` event: the segment as the sender posted it. */
function fromStream(data) {
  const segment = data.segment || {};
  return {
    session: data.session_id,
    sessionName: data.external_session_id,
    start: segment.start,
    end: segment.end,
    text: segment.text || "",
    speakerIndex: segment.speaker_id,
    label: segment.speaker,
    name: segment.speaker_name,
    isUser: segment.is_user,
  };
}

/** As the WebVTT names speakers: "You" for the user, else a name, "Speaker <n>" or the label. */
function speakerName(line) {
  if (line.isUser) return "You";
  if (line.name) return line.name;
  if (Number.isInteger(line.speakerIndex)) return `Speaker ${line.speakerIndex}`;
  return line.label || "Speaker";
}
