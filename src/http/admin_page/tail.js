// The live tail: reads /admin/api/tail with fetch() (EventSource cannot send the Bearer header)
// and shows domain events and actor transitions as they happen, newest first, keeping the last
// MAX_ENTRIES. It reconnects with a growing delay when the stream breaks.

import { ApiError, readTail } from "./api.js";
import { actorLink } from "./actors.js";
import { badge, byId, element, time } from "./dom.js";

const MAX_ENTRIES = 200;
const FIRST_RETRY_MS = 1000;
const LONGEST_RETRY_MS = 15000;

/** The tail's connection; one per page. */
export class LiveTail {
  constructor(onUnauthorized) {
    this.onUnauthorized = onUnauthorized;
    this.controller = null;
    this.retryTimer = null;
    this.retryMs = FIRST_RETRY_MS;
    this.list = byId("tail-list");
    this.status = byId("tail-status");
    this.toggle = byId("tail-toggle");
    this.toggle.addEventListener("click", () => (this.isRunning ? this.stop("paused") : this.start()));
    byId("tail-clear").addEventListener("click", () => this.list.replaceChildren());
  }

  get isRunning() {
    return this.controller !== null || this.retryTimer !== null;
  }

  /** Connects, unless already connected or connecting. */
  start() {
    if (this.isRunning) return;
    this.toggle.textContent = "Pause";
    this.connect();
  }

  /** Disconnects and stops retrying; `why` is shown ("paused", "stopped"). */
  stop(why = "stopped") {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const controller = this.controller;
    this.controller = null;
    if (controller) controller.abort();
    this.setStatus(why);
    this.toggle.textContent = "Resume";
  }

  setStatus(status) {
    this.status.textContent = status;
    this.status.dataset.status = status;
  }

  connect() {
    const controller = new AbortController();
    this.controller = controller;
    this.retryTimer = null;
    this.setStatus("connecting");
    const onOpen = () => {
      this.retryMs = FIRST_RETRY_MS;
      this.setStatus("connected");
    };
    readTail((frame) => this.show(frame), onOpen, controller.signal)
      .then(() => this.disconnected(controller, null))
      .catch((error) => this.disconnected(controller, error));
  }

  disconnected(controller, error) {
    if (this.controller !== controller) return; // stopped on purpose
    this.controller = null;
    if (error instanceof ApiError && error.isUnauthorized) {
      this.stop("stopped");
      this.onUnauthorized();
      return;
    }
    this.setStatus("reconnecting");
    this.retryTimer = setTimeout(() => this.connect(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, LONGEST_RETRY_MS);
  }

  /** Adds one frame of the stream at the top of the list. */
  show(frame) {
    let entry;
    try {
      entry = describe(frame.event, JSON.parse(frame.data));
    } catch {
      entry = element("li", { className: "tail-entry" }, [badge(frame.event, "muted"), " ", frame.data]);
    }
    this.list.prepend(entry);
    while (this.list.childElementCount > MAX_ENTRIES) this.list.lastElementChild.remove();
  }
}

function describe(kind, data) {
  if (kind === "event") {
    const entity = data.data && (data.data.id || data.data.orderId);
    return element("li", { className: "tail-entry tail-event", dataset: { name: data.name, entity: entity || "" } }, [
      time(data.at),
      " ",
      badge("event", "event"),
      " ",
      element("strong", { text: data.name }),
      " ",
      element("code", { className: "tail-data", text: JSON.stringify(data.data) }),
    ]);
  }
  if (kind === "transition") {
    const transition = data.transition || {};
    return element(
      "li",
      { className: "tail-entry tail-transition", dataset: { kind: data.kind, entity: data.id, message: transition.message } },
      [
        time(transition.at),
        " ",
        badge("transition", "transition"),
        " ",
        element("a", { text: `${data.kind} ${data.id}`, attributes: { href: actorLink(data.kind, data.id) } }),
        ` ${transition.message}: ${transition.from} → ${transition.to} (version ${transition.version})`,
      ],
    );
  }
  if (kind === "lagged") {
    return element("li", { className: "tail-entry tail-lagged" }, [
      badge("lagged", "warning"),
      ` the page fell behind and missed ${data} transitions`,
    ]);
  }
  return element("li", { className: "tail-entry" }, [badge(kind, "muted"), " ", JSON.stringify(data)]);
}
