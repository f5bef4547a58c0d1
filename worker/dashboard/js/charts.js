// Hand-drawn charts (no library: two small pictures do not need one): the last minute of audio
// levels on a canvas, and a sleep session's stages as a hypnogram in SVG.

import { svg } from "./dom.js";

export const CHART_MS = 60_000;

/** Samples further apart than this are not joined: the user was not sending audio between. */
const GAP_MS = 3000;
/** The levels chart's height, in CSS pixels (app.css gives the canvas the same). */
const LEVELS_HEIGHT = 120;
/** Room for the level axis's labels at the left and the time axis's at the bottom, in pixels. */
const LEFT = 34;
const BOTTOM = 18;

/**
 * Draws `levels` ([time in ms, level 0-100]) of the minute up to `now` on `canvas`: a grid at
 * 0, 50 and 100 with labels, the levels as a line (broken where audio stopped), `now` at the
 * right. Colours follow the canvas's own CSS colour, so the chart reads in dark mode too.
 */
export function drawLevels(canvas, levels, now = Date.now()) {
  const { context, width, height } = sharp(canvas);
  const plot = { width: width - LEFT, height: height - BOTTOM - 6 };
  const x = (t) => LEFT + plot.width - ((now - t) / CHART_MS) * plot.width;
  const y = (value) => 6 + plot.height - (value / 100) * plot.height;
  const ink = getComputedStyle(canvas).color;
  context.clearRect(0, 0, width, height);
  context.font = "12px system-ui, sans-serif";
  context.fillStyle = ink;
  context.strokeStyle = "#8888";
  context.lineWidth = 1;
  for (const value of [0, 50, 100]) {
    context.beginPath();
    context.moveTo(LEFT, y(value));
    context.lineTo(width, y(value));
    context.stroke();
    context.fillText(String(value), 2, y(value) + 4);
  }
  context.fillText("60 s ago", LEFT, height - 3);
  context.fillText("now", width - 26, height - 3);
  context.strokeStyle = "#1e8449";
  context.lineWidth = 2;
  context.beginPath();
  let previous = null;
  for (const [t, value] of levels.slice().sort((a, b) => a[0] - b[0])) {
    if (t < now - CHART_MS) continue;
    if (previous === null || t - previous > GAP_MS) context.moveTo(x(t), y(value));
    else context.lineTo(x(t), y(value));
    previous = t;
  }
  context.stroke();
}

/**
 * The canvas's 2D context drawing in CSS pixels at the screen's resolution: the canvas gets as
 * many device pixels as it shows, so lines and labels stay crisp and 12 px text is 12 px at
 * any width (a phone's or a desktop's).
 */
function sharp(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = LEVELS_HEIGHT;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { context, width, height };
}

/** Asleep's stage values, top row first as a hypnogram draws them (seed 003). */
export const STAGES = [
  { value: 0, name: "Wake" },
  { value: 3, name: "REM" },
  { value: 1, name: "Light" },
  { value: 2, name: "Deep" },
];

const ROW = 24;
/** Room for the stage names, in the picture's units (the phone's larger text fits too). */
const LABELS = 60;
const WIDTH = 600;

/** The hypnogram of `stages` (one value an epoch; -1 and unknown values leave a gap). */
export function hypnogram(stages, label) {
  const height = ROW * STAGES.length;
  const step = (WIDTH - LABELS) / Math.max(stages.length, 1);
  const row = (value) => STAGES.findIndex((stage) => stage.value === value);
  const picture = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`,
    role: "img",
    "aria-label": label,
    class: "hypnogram",
    id: "hypnogram",
  });
  STAGES.forEach((stage, index) => {
    const y = index * ROW + ROW / 2;
    picture.append(svg("text", { x: 0, y, "dominant-baseline": "middle", class: "axis" }, stage.name));
    picture.append(svg("line", { x1: LABELS, x2: WIDTH, y1: y, y2: y, class: "grid-line" }));
  });
  let path = "";
  let drawing = false;
  stages.forEach((value, index) => {
    const at = row(value);
    if (at < 0) {
      drawing = false;
      return;
    }
    const y = at * ROW + ROW / 2;
    const x = LABELS + index * step;
    path += drawing ? ` V ${y} H ${x + step}` : ` M ${x} ${y} H ${x + step}`;
    drawing = true;
  });
  if (path) picture.append(svg("path", { d: path.trim(), class: "stages" }));
  return picture;
}
