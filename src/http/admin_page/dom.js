// Building the page from data. Every text taken from the API goes through textContent or an
// attribute set with setAttribute/dataset, never through HTML parsing, so a ticket titled
// "<script>...</script>" is shown as those characters and never runs.

/**
 * Creates an element.
 * @param {string} tag
 * @param {{className?: string, text?: string, title?: string, dataset?: Object<string, string>,
 *          attributes?: Object<string, string>}} [options]
 * @param {Array<Node|string|null|undefined>} [children] nodes, or strings added as text
 * @returns {HTMLElement}
 */
export function element(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  if (options.className) node.className = options.className;
  if (options.text !== undefined && options.text !== null) node.textContent = String(options.text);
  if (options.title) node.title = options.title;
  for (const [key, value] of Object.entries(options.dataset || {})) node.dataset[key] = value;
  for (const [key, value] of Object.entries(options.attributes || {})) node.setAttribute(key, value);
  append(node, children);
  return node;
}

/** Appends nodes and strings (as text) to `parent`, skipping null and undefined. */
export function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined) continue;
    parent.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

/** Replaces the children of `parent`. */
export function replaceChildren(parent, children) {
  parent.replaceChildren();
  append(parent, children);
}

/** A table row of cells; each cell is a node or a value shown as text. */
export function row(cells, options = {}) {
  return element(
    "tr",
    options,
    cells.map((cell) => (cell instanceof Node ? element("td", {}, [cell]) : element("td", { text: display(cell) }))),
  );
}

/** How a scalar is shown: missing values as a dash. */
export function display(value) {
  if (value === null || value === undefined || value === "") return "—";
  return String(value);
}

/** Names the cluster members that did not answer in time (hidden when all did). */
export function showUnreachable(id, nodes) {
  const notice = byId(id);
  const missing = nodes || [];
  notice.textContent =
    missing.length === 0 ? "" : `No answer in time from ${missing.join(", ")}: what they host is not shown.`;
  show(notice, missing.length > 0);
}

/** Shows or hides an element. */
export function show(node, isShown) {
  node.hidden = !isShown;
}

/** Finds an element of the shell by id (the shell is static, so a missing one is a bug). */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node;
}

/** A small badge, e.g. "overloaded". */
export function badge(text, kind) {
  return element("span", { className: `badge badge-${kind}`, text });
}

/**
 * The colour of a shard owner: a hue taken from the FNV-1a hash of its id, so each node keeps
 * its colour across reloads and on every operator's screen.
 */
export function ownerColour(owner) {
  if (!owner) return "hsl(0, 0%, 80%)";
  let hash = 0x811c9dc5;
  for (let index = 0; index < owner.length; index += 1) {
    hash ^= owner.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return `hsl(${hash % 360}, 62%, 52%)`;
}

/**
 * An ISO 8601 time, shown in UTC to the millisecond (every node and every operator then reads
 * the same clock, and transitions a few milliseconds apart stay apart).
 */
export function time(iso) {
  if (!iso) return element("span", { text: "—" });
  const parsed = new Date(iso);
  const text = Number.isNaN(parsed.getTime()) ? iso : parsed.toISOString().replace("T", " ").replace("Z", " UTC");
  return element("time", { text, title: iso, attributes: { datetime: iso } });
}
