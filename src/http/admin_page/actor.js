// The actor view: one ticket's or order's state as stored, its activation (active or
// passivated, mailbox depth, restarts, quarantine) and its transition timeline, newest last.

import { getJson } from "./api.js";
import { badge, byId, display, element, replaceChildren, row, show, showUnreachable, time } from "./dom.js";

/** Loads and shows the actor `kind`/`id`. */
export async function showActor(kind, id) {
  byId("actor-title").textContent = `${kind} ${id}`;
  const actor = await getJson(`/admin/api/actors/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`);
  renderSummary(actor);
  showUnreachable("actor-unreachable", actor.unreachable);
  // Pretty-printed JSON as text: titles and other user input are never parsed as HTML.
  byId("actor-state").textContent = JSON.stringify(actor.state, null, 2);
  renderTransitions(actor.transitions || []);
}

function summaryEntry(term, value, key) {
  const definition = value instanceof Node ? element("dd", {}, [value]) : element("dd", { text: display(value) });
  definition.dataset.field = key;
  return [element("dt", { text: term }), definition];
}

function renderSummary(actor) {
  // The live fields are null when the node serving the actor did not answer (status "unknown").
  const depth = `${display(actor.mailboxDepth)}${actor.mailboxLimit ? ` of ${actor.mailboxLimit}` : ""}`;
  const entries = [
    summaryEntry("Kind", actor.kind, "kind"),
    summaryEntry("Status", badge(actor.status, actor.status === "active" ? "ok" : "muted"), "status"),
    summaryEntry("Version", actor.version, "version"),
    summaryEntry("Node", actor.node, "node"),
    summaryEntry("Shard", actor.shard, "shard"),
    summaryEntry(
      "Mailbox depth",
      element("span", {}, [depth, actor.overloaded ? " " : null, actor.overloaded ? badge("overloaded", "warning") : null]),
      "mailboxDepth",
    ),
    summaryEntry("Restarts", actor.restarts, "restarts"),
    summaryEntry(
      "Quarantined",
      actor.quarantined ? badge("quarantined", "danger") : element("span", { text: actor.quarantined === false ? "no" : "—" }),
      "quarantined",
    ),
  ];
  replaceChildren(byId("actor-summary"), entries.flat());
}

function renderTransitions(transitions) {
  const rows = transitions.map((transition) =>
    row(
      [
        time(transition.at),
        element("span", { className: "message", text: transition.message }),
        element("code", { text: display(transition.requestId) }),
        `${display(transition.from)} → ${display(transition.to)}`,
        transition.version,
        element(
          "ul",
          { className: "event-ids" },
          (transition.events || []).map((event) => element("li", {}, [element("code", { text: event })])),
        ),
      ],
      { dataset: { version: String(transition.version), message: transition.message } },
    ),
  );
  replaceChildren(byId("transitions-table").tBodies[0], rows);
  show(byId("transitions-empty"), transitions.length === 0);
}
