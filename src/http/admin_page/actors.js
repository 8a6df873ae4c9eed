// The actors view: find a ticket or an order by id, and page through the live (activated)
// actors with their mailbox depth, restarts, and overload and quarantine flags.

import { ApiError, getJson } from "./api.js";
import { badge, byId, element, replaceChildren, row, show, showUnreachable } from "./dom.js";

const PAGE_SIZE = 50;
const ID_PATTERN = /^[0-9a-fA-F]{24}$/;
const KINDS = ["ticket", "order"];

/** The link to an actor's view. */
export function actorLink(kind, id) {
  return `#/actor/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`;
}

/**
 * Finds which kind an id belongs to by asking for a ticket, then an order.
 * @returns {Promise<string|null>} "ticket", "order", or null when neither exists
 */
export async function findKind(id) {
  for (const kind of KINDS) {
    try {
      await getJson(`/admin/api/actors/${kind}/${encodeURIComponent(id)}`);
      return kind;
    } catch (error) {
      if (!(error instanceof ApiError && error.isNotFound)) throw error;
    }
  }
  return null;
}

/** Wires the search form and the paging controls (once). */
export function setUpActors(onError) {
  const form = byId("actor-search-form");
  const input = byId("actor-search-input");
  const searchError = byId("actor-search-error");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = input.value.trim().toLowerCase();
    show(searchError, false);
    if (!ID_PATTERN.test(id)) {
      searchError.textContent = "An id is 24 hexadecimal digits.";
      show(searchError, true);
      return;
    }
    findKind(id)
      .then((kind) => {
        if (kind) {
          window.location.hash = actorLink(kind, id);
        } else {
          searchError.textContent = `No ticket or order has the id ${id}.`;
          show(searchError, true);
        }
      })
      .catch(onError);
  });
  byId("actors-kind").addEventListener("change", () => showActors(null).catch(onError));
  byId("actors-first").addEventListener("click", () => showActors(null).catch(onError));
  byId("actors-next").addEventListener("click", () => {
    const next = byId("actors-next").dataset.after;
    if (next) showActors(next).catch(onError);
  });
}

/** Loads one page of live actors, starting after the id `after` (null: the first page). */
export async function showActors(after) {
  const kind = byId("actors-kind").value;
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (kind) query.set("kind", kind);
  if (after) query.set("after", after);
  const page = await getJson(`/admin/api/actors?${query}`);
  const actors = page.actors || [];
  const rows = actors.map((actor) => {
    const health = element("span", { className: "health" }, [
      actor.overloaded ? badge("overloaded", "warning") : null,
      actor.quarantined ? badge("quarantined", "danger") : null,
      !actor.overloaded && !actor.quarantined ? badge("ok", "ok") : null,
    ]);
    const link = element("a", { text: actor.id, attributes: { href: actorLink(actor.kind, actor.id) } });
    return row(
      [actor.kind, link, actor.shard, actor.status, actor.version, actor.mailboxDepth, actor.restarts, health],
      {
        className: actor.quarantined ? "row-danger" : actor.overloaded ? "row-warning" : "",
        dataset: { kind: actor.kind, id: actor.id },
      },
    );
  });
  replaceChildren(byId("actors-table").tBodies[0], rows);
  show(byId("actors-empty"), actors.length === 0 && !after);
  showUnreachable("actors-unreachable", page.unreachable);
  const next = byId("actors-next");
  next.disabled = !page.next;
  if (page.next) next.dataset.after = page.next;
  else delete next.dataset.after;
}
