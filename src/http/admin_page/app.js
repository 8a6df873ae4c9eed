// The admin page's entry point: signing in with the admin token, and showing one view at a time
// by the URL's fragment (#/cluster, #/actors, #/actor/<kind>/<id>, #/tail), so views can be
// bookmarked and the back button works. The token never appears in a URL.

import { ApiError, forgetToken, getJson, storeToken, storedToken } from "./api.js";
import { showActor } from "./actor.js";
import { setUpActors, showActors } from "./actors.js";
import { showCluster } from "./cluster.js";
import { byId, show } from "./dom.js";
import { LiveTail } from "./tail.js";

const VIEWS = ["sign-in", "cluster", "actors", "actor", "tail"];

let tail = null;

function showView(name) {
  for (const view of VIEWS) show(byId(`${view}-view`), view === name);
  show(byId("navigation"), name !== "sign-in");
  const current = name === "actor" ? "actors" : name;
  for (const link of byId("navigation").querySelectorAll("a[data-view]")) {
    if (link.dataset.view === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.body.dataset.view = name;
}

function notify(message) {
  const notice = byId("notice");
  notice.textContent = message || "";
  show(notice, Boolean(message));
}

function signOut(message) {
  forgetToken();
  if (tail) tail.stop("stopped");
  notify("");
  const error = byId("sign-in-error");
  error.textContent = message || "";
  show(error, Boolean(message));
  showView("sign-in");
  byId("token-input").focus();
}

/** What every view does with a failure: a refused token signs out, anything else is shown. */
function failed(error) {
  if (error instanceof ApiError && error.isUnauthorized) {
    signOut("The admin token was refused; sign in again.");
  } else {
    notify(`Could not load: ${error.message}`);
  }
}

/** Shows the view the URL's fragment names. */
function route() {
  if (!storedToken()) {
    signOut("");
    return;
  }
  notify("");
  const parts = window.location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [name] = parts;
  if (name === "actor" && parts.length === 3) {
    showView("actor");
    showActor(parts[1], parts[2]).catch(failed);
  } else if (name === "actors") {
    showView("actors");
    showActors(null).catch(failed);
  } else if (name === "tail") {
    showView("tail");
    tail.start();
  } else {
    showView("cluster");
    showCluster().catch(failed);
  }
}

function signIn(event) {
  event.preventDefault();
  const input = byId("token-input");
  const token = input.value.trim();
  const error = byId("sign-in-error");
  show(error, false);
  // Check the token before keeping it, so a typo is reported here and not by the first view.
  getJson("/admin/api/cluster", token)
    .then(() => {
      storeToken(token);
      input.value = "";
      route();
    })
    .catch((failure) => {
      error.textContent =
        failure instanceof ApiError && failure.isUnauthorized
          ? "That is not the admin token."
          : `Could not sign in: ${failure.message}`;
      show(error, true);
    });
}

function start() {
  tail = new LiveTail(() => signOut("The admin token was refused; sign in again."));
  byId("sign-in-form").addEventListener("submit", signIn);
  byId("sign-out").addEventListener("click", () => signOut(""));
  byId("cluster-refresh").addEventListener("click", () => showCluster().catch(failed));
  byId("actor-refresh").addEventListener("click", route);
  setUpActors(failed);
  window.addEventListener("hashchange", route);
  route();
}

start();
