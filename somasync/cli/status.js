// The live status page of a SomaSync agent (somasync.cli.status): polls /api/status
// every second and redraws. Names, addresses and states come from the network, so every
// one of them reaches the page as text (textContent, SVG text nodes, attribute values),
// never as markup.
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const STATES = new Set(["alive", "suspect", "failed", "left"]);
let previous = null;
let snapshots = 0;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    node.setAttribute(name, String(value));
  }
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return (value * 1000).toFixed(value < 0.01 ? 2 : value < 0.1 ? 1 : 0) + " ms";
  return value.toFixed(2) + " s";
}

function duration(value) {
  const s = Math.floor(value);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h ? h + " h " : "") + (h || m ? m + " min " : "") + (s % 60) + " s";
}

// How the link to a member carries the broadcast tree: eager (whole messages), lazy
// (announcements only) or mixed (eager in some streams), or null without a link.
function treeLink(member, tree) {
  if (!member.linked) return null;
  if (tree === null || member.lazy_streams === null || tree.streams === 0) return "eager";
  if (member.lazy_streams === 0) return "eager";
  return member.lazy_streams >= tree.streams ? "lazy" : "mixed";
}

function renderMembers(doc) {
  const body = document.querySelector("#members tbody");
  const rows = [];
  doc.members.forEach((member, index) => {
    const state = STATES.has(member.state) ? member.state : "unknown";
    const row = el("tr", null, "member state-" + state + (index === 0 ? " self" : ""));
    row.dataset.node = member.node_id;
    row.dataset.state = state;
    const link = treeLink(member, doc.tree);
    let linkText = "—";
    if (index === 0) linkText = "this node";
    else if (link === "mixed") {
      linkText = "eager in " + (doc.tree.streams - member.lazy_streams) + "/" + doc.tree.streams;
    } else if (link) linkText = link;
    row.append(
      el("td", member.node_id, "name"), el("td", member.address, "address"),
      el("td", state, "state"), el("td", member.incarnation, "num"),
      el("td", member.score === null ? "—" : member.score.toFixed(2), "num score"),
      el("td", seconds(member.rtt), "num rtt"),
      el("td", index === 0 ? "—" : seconds(Math.max(0, doc.t - member.last_seen)) + " ago",
         "num heard"),
      el("td", linkText, "link"));
    rows.push(row);
  });
  body.replaceChildren(...rows);
  const m = doc.membership;
  document.getElementById("member-counts").textContent = m === null ? "" :
    `${m.alive} alive, ${m.suspect} suspect, ${m.failed} failed, ${m.left} left` +
    (m.local_health ? ` · local health ${m.local_health}` : "");
}

function renderRates(doc) {
  const c = doc.counters;
  const rate = (name) => {
    if (previous === null || doc.t <= previous.t) return "…";
    const value = (c[name] - previous.counters[name]) / (doc.t - previous.t);
    return Math.max(0, value).toFixed(1) + "/s";
  };
  const entries = [
    ["delivered", rate("delivered") + "  (" + c.delivered + " in all)"],
    ["sent", rate("sent") + "  (" + c.sent + ")"],
    ["originated", rate("originated") + "  (" + c.originated + ")"],
    ["duplicates", rate("duplicates") + "  (" + c.duplicates + ")"],
    ["frames in / out", c.frames_in + " / " + c.frames_out],
    ["bytes in / out", c.bytes_in + " / " + c.bytes_out],
    ["frames rejected", c.rejected],
  ];
  const list = document.getElementById("rates");
  list.replaceChildren(...entries.flatMap(([name, value]) => [el("dt", name), el("dd", value)]));
}

function renderLatency(doc) {
  const h = doc.latency;
  const chart = document.getElementById("latency");
  const most = Math.max(1, ...h.counts);
  const width = 560 / h.counts.length;
  const parts = [];
  h.counts.forEach((count, i) => {
    const height = 150 * count / most;
    const x = 30 + i * width;
    const bound = h.bounds[i];
    const label = i >= h.bounds.length ? "more" :
      bound < 1 ? "≤" + Number((bound * 1000).toPrecision(3)) + "ms" : "≤" + bound + "s";
    const bar = svg("rect", {x: x + 2, y: 165 - height, width: width - 4, height: height,
                             fill: "#3b6fd4"});
    bar.append(svg("title", {}, label + ": " + count));
    parts.push(bar, svg("text", {x: x + width / 2, y: 180, "font-size": 9,
                                 "text-anchor": "middle"}, label));
    if (count) {
      parts.push(svg("text", {x: x + width / 2, y: 160 - height, "font-size": 10,
                              "text-anchor": "middle"}, count));
    }
  });
  parts.push(svg("line", {x1: 30, y1: 165, x2: 590, y2: 165, stroke: "#888"}));
  chart.replaceChildren(...parts);
  document.getElementById("latency-summary").textContent = h.count ?
    `${h.count} deliveries, mean ${seconds(h.total / h.count)}` : "no deliveries yet";
}

const LINK_STYLE = {
  eager: {stroke: "#1a7f37", "stroke-width": 3},
  lazy: {stroke: "#d98c00", "stroke-width": 3, "stroke-dasharray": "8 5"},
  mixed: {stroke: "#3b6fd4", "stroke-width": 3},
  unlinked: {stroke: "#999", "stroke-width": 2, "stroke-dasharray": "2 4"},
  passive: {stroke: "#bbb", "stroke-width": 1, "stroke-dasharray": "1 4"},
};

function renderOverlay(doc) {
  const graph = document.getElementById("overlay");
  const byAddress = new Map(doc.members.map((m) => [m.address, m]));
  // Neighbours: the overlay's active view, and every other peer with a link up (static
  // discovery has no overlay: its links are its neighbours).
  const active = doc.overlay === null ? [] : [...doc.overlay.active];
  for (const member of doc.members.slice(1)) {
    if (member.linked && !active.includes(member.address)) active.push(member.address);
  }
  const passive = doc.overlay === null ? [] :
    doc.overlay.passive.filter((address) => !active.includes(address));
  const edges = [], nodes = [];
  const place = (addresses, radius, kind) => addresses.forEach((address, i) => {
    const angle = 2 * Math.PI * i / addresses.length - Math.PI / 2;
    const x = radius * Math.cos(angle), y = radius * Math.sin(angle);
    const member = byAddress.get(address);
    const link = kind === "passive" ? "passive" :
      (member ? treeLink(member, doc.tree) : null) || "unlinked";
    const edge = svg("line", {x1: 0, y1: 0, x2: x, y2: y, ...LINK_STYLE[link]});
    edge.append(svg("title", {}, (member ? member.node_id : address) + ": " + link));
    edges.push(edge);
    const state = member && STATES.has(member.state) ? member.state : "unknown";
    const fill = kind === "passive" ? "#eee" : state === "alive" ? "#d7f0dd" :
      state === "suspect" ? "#ffe8c2" : "#f6d0d5";
    const group = svg("g", {class: "peer " + kind});
    group.append(svg("circle", {cx: x, cy: y, r: kind === "passive" ? 8 : 14, fill: fill,
                                stroke: "#555"}),
                 svg("text", {x: x, y: y + (y < 0 ? -20 : 28), "font-size": 12,
                              "text-anchor": "middle"}, member ? member.node_id : address));
    nodes.push(group);
  });
  place(active, 130, "active");
  place(passive, 220, "passive");
  const self = svg("g", {class: "self"});
  self.append(svg("circle", {cx: 0, cy: 0, r: 22, fill: "#3b6fd4"}),
              svg("text", {x: 0, y: 40, "font-size": 13, "font-weight": "bold",
                           "text-anchor": "middle"}, doc.node_id));
  graph.replaceChildren(...edges, ...nodes, self);
}

function render(doc) {
  document.getElementById("node-id").textContent = doc.node_id;
  document.getElementById("node-address").textContent = doc.address;
  document.getElementById("uptime").textContent = duration(doc.uptime);
  document.title = "SomaSync " + doc.node_id;
  renderMembers(doc);
  renderRates(doc);
  renderLatency(doc);
  renderOverlay(doc);
  snapshots += 1;
  document.body.dataset.snapshots = String(snapshots);
  const stamp = document.getElementById("connection");
  stamp.textContent = "updated " + new Date(doc.t * 1000).toLocaleTimeString();
  stamp.className = "";
  previous = doc;
}

async function poll() {
  try {
    const response = await fetch("/api/status", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (error) {
    const stamp = document.getElementById("connection");
    stamp.textContent = "no answer from the agent (" + error.message + "); retrying";
    stamp.className = "stale";
  }
  setTimeout(poll, POLL_MS);
}

poll();
