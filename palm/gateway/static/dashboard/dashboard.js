// palm dashboard: polls /dashboard/api/snapshot every second and redraws.
// No framework and no build step; the charts are small SVG line charts drawn here.
"use strict";

(function () {
  const POLL_MS = 1000;
  const HISTORY_S = 120;
  const KEY_NAME = "palm.dashboard.key";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
  const SVG = "http://www.w3.org/2000/svg";

  let apiKey = sessionStorage.getItem(KEY_NAME) || "";

  // A key in the address's fragment (never sent to a server): keep it for the tab,
  // take it out of the address bar. True when there was one.
  function keyFromFragment() {
    const fragment = /(?:^#|&)key=([^&]+)/.exec(location.hash);
    if (!fragment) return false;
    apiKey = decodeURIComponent(fragment[1]);
    sessionStorage.setItem(KEY_NAME, apiKey);
    history.replaceState(null, "", location.pathname + location.search);
    return true;
  }
  keyFromFragment();

  const history_ = { throughput: new Map(), latency: new Map(), queue: new Map() };
  let previous = null; // the last snapshot, for rates
  let timer = null;
  let generation = 0; // a restart (new key) ends the polling loop that was running

  const $ = (id) => document.getElementById(id);

  function push(store, name, t, value) {
    let points = store.get(name);
    if (!points) {
      points = [];
      store.set(name, points);
    }
    points.push([t, value]);
    while (points.length && points[0][0] < t - HISTORY_S) points.shift();
  }

  function fmt(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
    if (Number.isInteger(n)) return String(n);
    return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
  }

  function ago(seconds) {
    if (seconds < 0) seconds = 0;
    if (seconds < 90) return seconds.toFixed(0) + " s";
    if (seconds < 5400) return (seconds / 60).toFixed(0) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }

  function node(tag, text, cls) {
    const el = document.createElement(tag);
    if (text !== undefined && text !== null) el.textContent = String(text);
    if (cls) el.className = cls;
    return el;
  }

  function svgNode(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  // A line chart of the series in `store` over the last HISTORY_S seconds.
  function drawChart(id, legendId, store, now) {
    const svg = $(id);
    const width = Math.max(300, svg.getBoundingClientRect().width || 480);
    const height = 180;
    const left = 44, right = 8, top = 8, bottom = 20;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    let max = 0;
    let count = 0;
    for (const points of store.values()) {
      for (const [, v] of points) max = Math.max(max, v);
      count += points.length;
    }
    max = max > 0 ? niceCeiling(max * 1.1) : 1;
    const x = (t) => left + ((t - (now - HISTORY_S)) / HISTORY_S) * (width - left - right);
    const y = (v) => top + (1 - v / max) * (height - top - bottom);
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      svg.appendChild(svgNode("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }));
      const label = svgNode("text", { x: left - 4, y: y(v) + 3, "text-anchor": "end" });
      label.textContent = fmt(v);
      svg.appendChild(label);
    }
    for (const [s, text] of [[HISTORY_S, "-2 min"], [60, "-1 min"], [0, "now"]]) {
      const label = svgNode("text", { x: x(now - s), y: height - 5, "text-anchor": s === 0 ? "end" : "middle" });
      label.textContent = text;
      svg.appendChild(label);
    }
    const legend = $(legendId);
    while (legend.firstChild) legend.removeChild(legend.firstChild);
    let i = 0;
    for (const [name, points] of [...store.entries()].sort()) {
      const color = COLORS[i++ % COLORS.length];
      if (points.length) {
        const d = points.map(([t, v], j) => `${j ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
        svg.appendChild(svgNode("path", { d, fill: "none", stroke: color, "stroke-width": 2, "data-series": name }));
      }
      const item = node("span");
      const swatch = node("span", "", "swatch");
      swatch.setAttribute("data-color", color);
      swatch.appendChild(svgSwatch(color));
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(name));
      legend.appendChild(item);
    }
    svg.setAttribute("data-points", String(count));
  }

  function svgSwatch(color) {
    const s = svgNode("svg", { width: 10, height: 3 });
    s.appendChild(svgNode("rect", { width: 10, height: 3, fill: color }));
    return s;
  }

  function niceCeiling(v) {
    const exp = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v) return m * exp;
    return 10 * exp;
  }

  function fillTable(id, rows) {
    const body = $(id).tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const cell of cells) {
        const td = node("td", cell.text, cell.cls);
        if (cell.data) for (const [k, v] of Object.entries(cell.data)) td.setAttribute("data-" + k, v);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function fillLog(id, records, empty) {
    const list = $(id);
    while (list.firstChild) list.removeChild(list.firstChild);
    if (!records.length) {
      list.appendChild(node("li", empty, "empty"));
      return;
    }
    for (const r of records) {
      const when = new Date(r.time * 1000).toLocaleTimeString();
      const who = r.server + (r.worker ? "/" + r.worker : "");
      const request = r.request_id ? ` [${r.request_id}]` : "";
      list.appendChild(node("li", `${when} ${r.level} ${who} ${r.host}:${r.pid}${request} ${r.message}`, r.level));
    }
  }

  function render(snap) {
    const now = snap.time;
    $("cluster").textContent = "cluster " + snap.cluster;
    const t = snap.totals;
    $("t-services").textContent = snap.services.length;
    $("t-servers").textContent = snap.servers.length;
    $("t-workers").textContent = `${t.workers_alive}/${t.workers}`;
    $("t-busy").textContent = t.workers_busy;
    $("t-backlog").textContent = fmt(t.backlog);
    $("t-inflight").textContent = fmt(t.in_flight);
    $("t-done").textContent = fmt(t.out);
    $("t-failed").textContent = fmt(t.failed);

    const before = new Map();
    if (previous) {
      for (const s of previous.servers) for (const f of s.functions) before.set(`${s.name}.${f.name}`, [previous.time, f.out + f.failed]);
    }
    const rates = new Map();
    const functionRows = [];
    for (const s of snap.servers) {
      for (const f of s.functions) {
        const name = `${s.name}.${f.name}`;
        const last = before.get(name);
        let rate = null;
        if (last && now > last[0]) rate = Math.max(0, (f.out + f.failed - last[1]) / (now - last[0]));
        if (rate !== null) {
          rates.set(name, rate);
          push(history_.throughput, name, now, rate);
        }
        if (f.p50_ms || f.p99_ms || history_.latency.has(name + " p50")) {
          push(history_.latency, name + " p50", now, f.p50_ms);
          push(history_.latency, name + " p99", now, f.p99_ms);
        }
        functionRows.push([
          { text: s.name }, { text: f.name }, { text: f.in, cls: "n" }, { text: f.out, cls: "n" },
          { text: f.failed, cls: f.failed ? "n bad" : "n" }, { text: f.in_flight, cls: "n" },
          { text: rate === null ? "-" : fmt(rate), cls: "n" },
          { text: f.p50_ms.toFixed(2), cls: "n" }, { text: f.p99_ms.toFixed(2), cls: "n" },
        ]);
      }
    }
    push(history_.queue, "backlog", now, t.backlog);
    push(history_.queue, "in flight", now, t.in_flight);
    fillTable("functions", functionRows);

    const byName = new Map(snap.servers.map((s) => [s.name, s]));
    const serverRows = [];
    const listed = new Set();
    for (const svc of snap.services) {
      const s = byName.get(svc.name);
      listed.add(svc.name);
      serverRows.push(serverRow(svc.name, svc.kind, s, now));
    }
    for (const s of snap.servers) if (!listed.has(s.name)) serverRows.push(serverRow(s.name, s.kind, s, now));
    fillTable("servers", serverRows);

    const workerRows = [];
    for (const s of snap.servers) {
      for (const w of s.workers) {
        const state = !w.alive ? "dead" : w.busy ? `busy (${w.busy})` : "idle";
        workerRows.push([
          { text: s.name }, { text: w.id, data: { worker: w.id } },
          { text: state, cls: !w.alive ? "bad" : w.busy ? "busy" : "ok" },
          { text: w.jobs_done, cls: "n" }, { text: w.host || "-" }, { text: w.pid || "-", cls: "n" },
          { text: ago(now - w.last_seen), cls: "n" },
        ]);
      }
    }
    fillTable("workers", workerRows);
    fillLog("errors", snap.errors, "no errors or warnings in the central logs");
    fillLog("logs", snap.logs, "no log records yet");

    drawChart("chart-throughput", "legend-throughput", history_.throughput, now);
    drawChart("chart-latency", "legend-latency", history_.latency, now);
    drawChart("chart-queue", "legend-queue", history_.queue, now);
    previous = snap;
  }

  function serverRow(name, kind, s, now) {
    if (!s) {
      return [{ text: name }, { text: kind }, { text: "no stats", cls: "bad" }, { text: "-" },
        { text: "-", cls: "n" }, { text: "-", cls: "n" }, { text: "-", cls: "n" }, { text: "-", cls: "n" }];
    }
    return [
      { text: name }, { text: kind }, { text: "live", cls: "ok" }, { text: s.host },
      { text: s.pid, cls: "n" }, { text: s.backlog, cls: "n" }, { text: s.in_flight, cls: "n" },
      { text: s.started_at ? ago(now - s.started_at) : "-", cls: "n" },
    ];
  }

  function status(text, bad) {
    const el = $("status");
    el.textContent = text;
    el.className = bad ? "status bad" : "status";
  }

  async function poll(loop) {
    if (loop !== generation) return;
    timer = null;
    if (document.hidden) {
      // a tab nobody looks at asks for nothing; it catches up when shown again
      timer = setTimeout(() => poll(loop), POLL_MS);
      return;
    }
    try {
      const headers = apiKey ? { Authorization: "Bearer " + apiKey } : {};
      const response = await fetch("/dashboard/api/snapshot", { headers, cache: "no-store" });
      if (loop !== generation) return;
      if (response.status === 401) {
        $("key-form").hidden = false;
        status(apiKey ? "API key refused: enter another" : "enter an API key", true);
        return; // polling resumes when a key is entered
      }
      const body = await response.json();
      if (!response.ok) {
        status(`${response.status} ${body.error || ""}: ${body.detail || ""}`, true);
      } else {
        $("key-form").hidden = true;
        render(body);
        status(body.problem ? "state: " + body.problem : "updated " + new Date().toLocaleTimeString(), !!body.problem);
      }
    } catch (err) {
      if (loop !== generation) return;
      status("cannot reach the dashboard: " + err, true);
    }
    timer = setTimeout(() => poll(loop), POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    function restart() {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      poll(++generation);
    }
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      apiKey = $("key-input").value.trim();
      sessionStorage.setItem(KEY_NAME, apiKey);
      $("key-input").value = "";
      restart();
    });
    // the same page given a key in its fragment (no reload): use it at once
    window.addEventListener("hashchange", () => {
      if (keyFromFragment()) restart();
    });
    restart();
  });
})();
