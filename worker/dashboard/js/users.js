// Users with recent activity (GET /v1/users?since=): the most recently active first, each
// linking to its live view; and a form to watch any user id.

import { get, withQuery } from "./api.js";
import { every, h, heading, replaceKeepingFocus, statusLine, table, time } from "./dom.js";

const REFRESH_MS = 5000;
/** How far back "recent" reaches. */
const RECENT_MS = 24 * 3600 * 1000;

export function render(container) {
  const uid = h("input", { id: "watch-uid", name: "uid", required: true, autocomplete: "off", spellcheck: "false" });
  const form = h(
    "form",
    { id: "watch-form" },
    h("label", { for: "watch-uid", text: "User id" }),
    uid,
    h("button", { type: "submit", text: "Watch" }),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = uid.value.trim();
    if (wanted) location.hash = `#/users/${encodeURIComponent(wanted)}`;
  });
  const body = h("div", { id: "users" });
  const status = statusLine();
  container.append(heading("Users"), form, h("h3", { text: "Active in the last 24 hours" }), body, status);
  return every(REFRESH_MS, async () => {
    try {
      const since = new Date(Date.now() - RECENT_MS).toISOString();
      const page = await get(withQuery("/v1/users", { since, limit: 1000 }));
      const recent = page.items
        .slice()
        .sort((a, b) => String(b.last_event_at).localeCompare(String(a.last_event_at)));
      replaceKeepingFocus(body, usersTable(recent));
      status.textContent = page.next ? "More than 1,000 users: the first 1,000 by id are shown." : "";
    } catch (error) {
      status.textContent = `Could not refresh: ${error.message}`;
    }
  });
}

function usersTable(users) {
  return table(
    [
      ["User", (user) =>
        h("a", { href: `#/users/${encodeURIComponent(user.uid)}`, "data-key": user.uid, text: user.uid })],
      ["Last event", (user) => time(user.last_event_at)],
    ],
    users,
    "No user has been active in the last 24 hours.",
  );
}
