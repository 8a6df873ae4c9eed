// The cluster view: the nodes, one grid of shards per kind coloured by owner, and the recent
// shard moves.

import { getJson } from "./api.js";
import { byId, display, element, ownerColour, replaceChildren, row, show, showUnreachable, time } from "./dom.js";

const MOVES_SHOWN = 20;

/** Loads and shows the cluster. */
export async function showCluster() {
  const [cluster, moves] = await Promise.all([
    getJson("/admin/api/cluster"),
    getJson(`/admin/api/shard-moves?limit=${MOVES_SHOWN}`),
  ]);
  const shards = cluster.shards || [];
  const nodes = cluster.nodes || [];
  renderNodes(nodes, shards);
  renderLegend(nodes, shards);
  renderGrids(shards);
  renderMoves(moves.moves || []);
  showUnreachable("moves-unreachable", moves.unreachable);
}

function swatch(owner) {
  const node = element("span", { className: "swatch", title: owner || "no owner" });
  // Setting a style property from script is CSSOM, which the CSP allows (inline style
  // attributes and elements are what it forbids).
  node.style.backgroundColor = ownerColour(owner);
  return node;
}

function renderNodes(nodes, shards) {
  const rows = nodes.map((node) => {
    const owned = shards.filter((shard) => shard.owner === node.id).length;
    return row(
      [
        element("span", {}, [swatch(node.id), " ", node.id]),
        node.address,
        (node.roles || []).join(", "),
        time(node.startedAt),
        time(node.lastHeartbeat),
        owned,
      ],
      { dataset: { node: node.id } },
    );
  });
  replaceChildren(byId("nodes-table").tBodies[0], rows);
}

function renderLegend(nodes, shards) {
  const owners = new Set(nodes.map((node) => node.id));
  for (const shard of shards) owners.add(shard.owner);
  const entries = [...owners].sort().map((owner) =>
    element("span", { className: "legend-entry", dataset: { owner: owner || "" } }, [
      swatch(owner),
      display(owner || "unowned"),
    ]),
  );
  replaceChildren(byId("shard-legend"), entries);
}

function renderGrids(shards) {
  const kinds = [...new Set(shards.map((shard) => shard.kind))].sort();
  const grids = kinds.map((kind) => {
    const ofKind = shards.filter((shard) => shard.kind === kind).sort((left, right) => left.shard - right.shard);
    const cells = ofKind.map((shard) => {
      const cell = element("div", {
        className: "shard-cell",
        title: `${kind} shard ${shard.shard}: ${shard.owner || "unowned"} (epoch ${shard.epoch})`,
        dataset: { shard: String(shard.shard), owner: shard.owner || "" },
      });
      cell.style.backgroundColor = ownerColour(shard.owner);
      return cell;
    });
    return element("figure", { className: "shard-grid-figure" }, [
      element("figcaption", { text: `${kind} shards (${ofKind.length})` }),
      element("div", { className: "shard-grid", dataset: { kind } }, cells),
    ]);
  });
  replaceChildren(byId("shard-grids"), grids);
}

function renderMoves(moves) {
  const rows = moves.map((move) =>
    row([
      time(move.at),
      move.kind,
      move.shard,
      move.from,
      move.to,
      move.reason,
      `${display(move.fromEpoch)} → ${display(move.toEpoch)}`,
      move.refused ? "refused" : `${display(move.drainMs)} ms${move.drained === false ? " (not drained)" : ""}`,
    ]),
  );
  replaceChildren(byId("moves-table").tBodies[0], rows);
  show(byId("moves-table"), moves.length > 0);
  show(byId("moves-empty"), moves.length === 0);
}
