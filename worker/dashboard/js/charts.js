// Hand-drawn charts (no library: two small pictures do not need one): the last minute of audio
// levels on a canvas, and a sleep session's stages as a hypnogram in SVG.

import { svg } from "./dom.js";

export const CHART_MS = 60_000;

/** Draws `levels` ([time in ms, level 0-100]) of the last minute on `canvas`, newest at the right. */
export function drawLevels(canvas, levels) {
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

/** Asleep's stage values, top row first as a hypnogram draws them (seed 003). */
export const STAGES = [
  { value: 0, name: "Wake" },
  { value: 3, name: "REM" },
  { value: 1, name: "Light" },
  { value: 2, name: "Deep" },
];

const ROW = 24;
const LABELS = 48;
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
    picture.append(svg("text", { x: 0, y: y + 4, class: "axis" }, stage.name));
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
