// The network page: polls /api/snapshot with the token from the URL's fragment (#token=…) and
// redraws. No framework, no build step; every text from the network goes in through textContent.
"use strict";

const POLL_MS = 1000;
const ROLE_COLOUR = { sclerotium: "#b57bff", rhizomorph: "#4cc38a", hypha: "#4aa8ff", none: "#7d8a99" };
const SVG = "http://www.w3.org/2000/svg";
let updates = 0;

function token() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : "";
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function fill(tbodyParent, rows, emptyId) {
  const body = document.querySelector(tbodyParent + " tbody");
  body.replaceChildren(...rows);
  if (emptyId) document.getElementById(emptyId).hidden = rows.length > 0;
}

function count(v) { return Array.isArray(v) ? v.length : (v ?? "–"); }
function ms(v) { return v == null ? "–" : v.toFixed(1) + " ms"; }
function clock(s) { return s ? new Date(s * 1000).toLocaleTimeString() : "–"; }

function drawMap(snap) {
  const map = document.getElementById("map");
  const W = 600, H = 440, cx = W / 2, cy = H / 2, r = Math.min(W, H) / 2 - 70;
  const members = snap.members, n = members.length, pos = {};
  members.forEach((m, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, n);
    pos[m.node_id] = n === 1 ? [cx, cy] : [cx + r * Math.cos(a), cy + r * Math.sin(a)];
  });
  const parts = [];
  for (const l of snap.links) {
    const [x1, y1] = pos[l.a] || [0, 0], [x2, y2] = pos[l.b] || [0, 0];
    if (!pos[l.a] || !pos[l.b]) continue;
    parts.push(svg("line", { class: "link", x1, y1, x2, y2, "data-link": l.a + "-" + l.b }));
    if (l.latency_ms != null) {
      const t = svg("text", { class: "lat", x: (x1 + x2) / 2 + 4, y: (y1 + y2) / 2 - 4 });
      t.textContent = l.latency_ms.toFixed(1) + " ms";
      parts.push(t);
    }
  }
  for (const m of members) {
    const [x, y] = pos[m.node_id];
    const g = svg("g", { class: "node node-" + m.state, "data-node": m.node_id, "data-role": m.role, "data-state": m.state });
    const colour = m.state === "dead" ? "#ff5c5c" : (ROLE_COLOUR[m.role] || ROLE_COLOUR.none);
    if (m.validator) g.append(svg("circle", { cx: x, cy: y, r: 27, fill: "none", stroke: "#ffffff", "stroke-width": 2 }));
    if (m.state === "unreachable") g.append(svg("circle", { cx: x, cy: y, r: 31, fill: "none", stroke: "#f0b429", "stroke-width": 2, "stroke-dasharray": "5 4" }));
    g.append(svg("circle", { class: "body", cx: x, cy: y, r: 21, fill: colour }));
    const label = svg("text", { x, y: y + 46, "text-anchor": "middle" });
    label.textContent = m.short + (m.state === "self" ? " (this node)" : "");
    const role = svg("text", { class: "lat", x, y: y + 60, "text-anchor": "middle" });
    role.textContent = m.role + (m.state === "up" || m.state === "self" ? "" : " · " + m.state);
    const tip = svg("title");
    tip.textContent = m.node_id + "\n" + m.role + (m.validator ? " (validator)" : "") + " — " + m.state;
    g.append(label, role, tip);
    parts.push(g);
  }
  map.replaceChildren(...parts);
}

function drawMembers(snap) {
  fill("#members", snap.members.map(m => el("tr", { "data-node": m.node_id, "data-role": m.role, "data-state": m.state },
    el("td", { class: "mono", title: m.node_id }, m.short + (m.state === "self" ? " (this node)" : "")),
    el("td", { class: "role-" + m.role }, m.role + (m.validator ? " · validator" : "")),
    el("td", { class: "state-" + m.state }, m.state),
    el("td", {}, ms(m.latency_ms)),
    el("td", {}, m.epoch == null ? "–" : m.epoch),
    el("td", {}, m.trust.toFixed(2)),
    el("td", {}, m.read_only == null ? "–" : (m.read_only ? "yes" : "no")),
    el("td", { class: m.report_stale ? "state-unreachable" : "" }, m.report_age_s == null ? "–" : Math.round(m.report_age_s) + " s ago"))));
}

function drawConsensus(c) {
  const kv = el("div", { class: "kv" },
    el("div", {}, "height"), el("div", { id: "height" }, c.height),
    el("div", {}, "rate"), el("div", {}, c.heights_per_min == null ? "–" : c.heights_per_min + " heights/min"),
    el("div", {}, "this node"), el("div", {}, c.state),
    el("div", {}, "validators"), el("div", { class: "mono" }, c.validators.map(v => v.short + " (trust " + v.trust.toFixed(2) + ")").join(", ") || "–"),
    el("div", {}, "primary"), el("div", { class: "mono" }, (c.primary_hash || "–").slice(0, 16)));
  document.getElementById("consensus").replaceChildren(kv);
  fill("#rounds", c.rounds.map(r => el("tr", {}, el("td", {}, r.height), el("td", {}, clock(r.time_s)),
    el("td", {}, r.round), el("td", {}, r.members), el("td", { class: "mono" }, r.signers.join(" ")))));
}

function drawServices(snap) {
  const rows = (snap.services || []).map(s => el("tr", { "data-service": s.name },
    el("td", {}, s.name), el("td", {}, s.running + "/" + s.desired),
    el("td", { class: "health-" + s.health }, s.health),
    el("td", { class: "mono" }, Object.entries(s.placement || {}).map(([n, st]) => n.slice(-8) + ": " + st).join("\n") || "–"),
    el("td", { class: "mono" }, (s.endpoints || []).join("\n") || "–")));
  fill("#services", rows, "services-empty");
  const endo = (snap.endophytes || []).map(e => el("tr", {},
    el("td", {}, e.name), el("td", {}, e.generation), el("td", { class: "mono" }, (e.primary || "–").slice(-8)),
    el("td", { class: "mono" }, (e.backups || []).map(b => b.slice(-8) + " (" + ((e.reports || {})[b] ?? "–") + ")").join(" ")),
    el("td", {}, e.note || "")));
  fill("#endophytes", endo, "endophytes-empty");
}

function drawStorage(st) {
  const box = document.getElementById("storage");
  if (!st || st.unavailable) { box.replaceChildren(el("p", { class: "muted" }, "storage: " + ((st && st.unavailable) || "unknown"))); return; }
  const store = st.store || {}, repair = st.repair || {};
  const kv = el("div", { class: "kv" },
    el("div", {}, "devices"), el("div", {}, (st.devices || []).length + " (up " + count(repair.devices_up) + ", silent " + count(repair.devices_silent) + ")"),
    el("div", {}, "shares here"), el("div", {}, (store.shares ?? 0) + " · " + (store.used_bytes ?? 0) + " bytes · corrupt found " + (store.corrupt_found ?? 0)),
    el("div", {}, "FUSE"), el("div", {}, st.fuse || "–"));
  const vols = Object.entries(st.volumes || {}).map(([name, v]) => el("tr", {}, el("td", {}, name), el("td", {}, v.seq),
    el("td", { class: "mono" }, (v.lease || "–").slice(-8)), el("td", {}, JSON.stringify(Object.fromEntries(Object.entries(v).filter(([k]) => !["seq", "lease", "lease_until_s"].includes(k)))))));
  const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "volume"), el("th", {}, "seq"), el("th", {}, "writer"), el("th", {}, "health"))), el("tbody", {}, ...vols));
  box.replaceChildren(kv, vols.length ? table : el("p", { class: "muted" }, "no volumes"));
}

function render(snap) {
  const node = snap.node, c = snap.consensus;
  document.getElementById("network").textContent = node.network_name;
  document.title = "Mycelium — " + node.network_name;
  const up = snap.members.filter(m => m.state === "up" || m.state === "self").length;
  document.getElementById("summary").textContent =
    snap.members.length + " members (" + up + " reachable) · height " + c.height + " · validators " + c.validators.length + " · this node " + node.node_id.slice(-8) + " (" + node.role + ")";
  const banner = document.getElementById("banner");
  const problems = [];
  if (node.unusable) problems.push("this node cannot run: " + node.unusable.reason + " — " + node.unusable.fix);
  if (node.read_only) problems.push("read-only: " + (node.read_only_reason || "no quorum of validators reachable"));
  const restarted = Object.keys(node.subsystems || {});
  if (restarted.length) problems.push("restarted after failures: " + restarted.join(", ") + " (see `mycelium status`)");
  banner.hidden = problems.length === 0;
  banner.textContent = problems.join(" · ");
  drawMap(snap); drawMembers(snap); drawConsensus(c); drawServices(snap); drawStorage(snap.storage);
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function setLive(ok, text) {
  const live = document.getElementById("live");
  live.className = "live " + (ok ? "ok" : "bad");
  live.textContent = text;
  document.body.dataset.status = ok ? "live" : "error";
}

async function poll() {
  try {
    const answer = await fetch("/api/snapshot", { headers: { Authorization: "Bearer " + token() }, cache: "no-store" });
    if (answer.status === 401) {
      setLive(false, "no access");
      const b = document.getElementById("banner");
      b.hidden = false;
      b.textContent = "This page needs the token: open the full URL that `mycelium ui` prints (it ends in #token=…).";
    } else if (!answer.ok) {
      setLive(false, "daemon error " + answer.status);
    } else {
      render(await answer.json());
      updates += 1;
      document.body.dataset.updates = String(updates);
      setLive(true, "live");
    }
  } catch (e) {
    setLive(false, "daemon unreachable");
  }
  setTimeout(poll, POLL_MS);
}

poll();
