// The dashboard's entry point: sign-in with the admin token (exchanged for a session cookie),
// sign-out, and the views, one per address fragment:
//   #/overview, #/users, #/users/<uid>, #/endpoints, #/endpoints/<id>, #/dead-letters.
// Each view module renders into the view's section and returns a function that stops it
// (its timers and streams) when another view opens.

import { request } from "./api.js";
import * as overview from "./overview.js";
import * as users from "./users.js";
import * as user from "./user.js";
import * as endpoints from "./endpoints.js";
import * as deadLetters from "./dead_letters.js";

const $ = (id) => document.getElementById(id);

/** Address fragment pattern, view, and the nav link it belongs to. */
const ROUTES = [
  [/^#\/users\/(.+)$/, user, "#/users"],
  [/^#\/users$/, users, "#/users"],
  [/^#\/endpoints\/(.+)$/, endpoints.detail, "#/endpoints"],
  [/^#\/endpoints$/, endpoints.list, "#/endpoints"],
  [/^#\/dead-letters$/, deadLetters, "#/dead-letters"],
  [/^/, overview, "#/overview"],
];

let stopView = () => {};
let signedIn = false;

function show(isSignedIn) {
  signedIn = isSignedIn;
  $("sign-in").hidden = isSignedIn;
  $("view").hidden = !isSignedIn;
  $("nav").hidden = !isSignedIn;
  $("sign-out").hidden = !isSignedIn;
  if (isSignedIn) {
    route();
  } else {
    stopView();
    stopView = () => {};
    $("view").replaceChildren();
    $("token").focus();
  }
}

function route() {
  if (!signedIn) return;
  stopView();
  const hash = location.hash;
  const [pattern, view, link] = ROUTES.find(([pattern]) => pattern.test(hash));
  const argument = hash.match(pattern)[1];
  for (const anchor of $("nav").querySelectorAll("a")) {
    if (anchor.getAttribute("href") === link) anchor.setAttribute("aria-current", "page");
    else anchor.removeAttribute("aria-current");
  }
  const container = $("view");
  container.replaceChildren();
  stopView = view.render(container, argument && decodeURIComponent(argument)) || (() => {});
  const title = container.querySelector(".view-title");
  if (title) title.focus({ preventScroll: true });
}

async function begin() {
  const { status } = await request("GET", "/v1/auth/session");
  show(status === 200);
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { status, json } = await request("POST", "/v1/auth/session", { token: $("token").value });
  if (status === 200) {
    $("token").value = "";
    $("sign-in-error").textContent = "";
    show(true);
  } else {
    $("sign-in-error").textContent = (json && json.message) || `Sign-in failed (${status}).`;
  }
});

$("sign-out").addEventListener("click", async () => {
  await request("DELETE", "/v1/auth/session");
  show(false);
});

window.addEventListener("hashchange", route);
window.addEventListener("signed-out", () => {
  if (signedIn) {
    show(false);
    $("sign-in-error").textContent = "The session has ended: sign in again.";
  }
});

begin();
