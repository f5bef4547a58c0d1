// Dead letters: the messages the worker gave up on, newest first, with why; Redrive puts one
// back on the events queue (POST /v1/dead-letters/{id}/redrive).

import { get, post } from "./api.js";
import {
  actionButton,
  every,
  h,
  heading,
  number,
  replaceKeepingFocus,
  statusLine,
  table,
  time,
} from "./dom.js";

const REFRESH_MS = 3000;

export function render(container) {
  const body = h("div", { id: "dead-letters" });
  const status = statusLine();
  status.id = "dead-letter-action";
  container.append(heading("Dead letters"), status, body);
  const refresh = async () => {
    try {
      const page = await get("/v1/dead-letters?limit=100");
      replaceKeepingFocus(body, lettersTable(page.items, status, refresh));
    } catch (error) {
      status.textContent = `Could not refresh: ${error.message}`;
    }
  };
  return every(REFRESH_MS, refresh);
}

function lettersTable(items, status, refresh) {
  return table(
    [
      ["Dead since", (letter) => time(letter.dead_at)],
      ["Kind", (letter) => letter.kind],
      ["User", (letter) => letter.uid],
      ["Reason", (letter) => letter.reason],
      ["Size", (letter) => `${number(letter.payload_bytes)} B`],
      ["Redriven", (letter) => (letter.redriven_at ? time(letter.redriven_at) : "no")],
      ["", (letter) => redriveButton(letter, status, refresh)],
    ],
    items,
    "No dead letter.",
  );
}

function redriveButton(letter, status, refresh) {
  if (letter.redriven_at) return "";
  const attributes = { "data-key": `redrive-${letter.id}`, "aria-label": `Redrive dead letter ${letter.id}` };
  return actionButton("Redrive", attributes, status, async () => {
    await post(`/v1/dead-letters/${letter.id}/redrive`);
    refresh();
    return `Dead letter ${letter.id} is back on the events queue.`;
  });
}
