/* dbdict dashboard: draws every page from JSON, fetched from /api/... (dbdict serve) or
   embedded in the page (dbdict report). Plain JavaScript, no build step.
   Rule: user strings (parameters, results, errors, logs, hosts) only ever become text nodes
   (textContent, createTextNode): never innerHTML. Charts use ECharts' canvas renderer with
   tooltips rendered as rich text on the canvas, not as HTML. */
"use strict";

(function () {
  const CONFIG = JSON.parse(document.getElementById("dbdict-config").textContent);
  const REPORT = CONFIG.page === "report";
  const DATA = CONFIG.data || null;
  const LIVE_STATUSES = ["START", "RUNNING"];
  const charts = {};

  // ---------------------------------------------------------------------------- helpers

  function $(id) { return document.getElementById(id); }

  /* An element with attributes and children; strings become text nodes. */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  /* A value as short text: numbers compactly, lists and objects as JSON. */
  function fmt(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      return (a !== 0 && (a < 1e-3 || a >= 1e6)) ? v.toExponential(4) : String(+v.toPrecision(6));
    }
    if (typeof v === "boolean") return v ? "True" : "False";
    if (typeof v === "object") {
      const s = JSON.stringify(v);
      return s.length > 120 ? s.slice(0, 119) + "…" : s;
    }
    return String(v);
  }

  function fmtTime(iso) {
    if (!iso) return "";
    return String(iso).replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z");
  }

  function fmtDuration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "—";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    const h = Math.floor(s / 3600);
    return h < 48 ? h + " h " + Math.floor((s % 3600) / 60) + " min" : Math.round(h / 24) + " days";
  }

  /* A finite number from a value (the endpoints write NaN/Infinity as strings), or null. */
  function num(v) {
    return (typeof v === "number" && isFinite(v)) ? v : null;
  }

  /* [min, max] of the numbers among `values` ([0, 1] if none). */
  function range(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) if (v !== null) { if (v < lo) lo = v; if (v > hi) hi = v; }
    return lo === Infinity ? [0, 1] : [lo, hi];
  }

  function jobLink(id) {
    return REPORT ? el("span", {}, "#" + id) : el("a", {href: "/jobs/" + Number(id)}, "#" + id);
  }

  function badge(status) { return el("span", {class: "badge s-" + status}, status); }

  function showError(msg) {
    const box = $("error");
    if (!box) return;
    box.hidden = !msg;
    box.textContent = msg || "";
  }

  async function api(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (Array.isArray(v)) v.forEach(x => q.append(k, x));
      else if (v !== null && v !== undefined && v !== "") q.append(k, v);
    }
    const resp = await fetch(path + (q.toString() ? "?" + q : ""), {headers: {Accept: "application/json"}});
    const body = await resp.json().catch(() => ({error: resp.status + " " + resp.statusText}));
    if (!resp.ok) throw new ApiError(body.error || String(resp.status), resp.status);
    return body;
  }

  class ApiError extends Error {
    constructor(msg, status) { super(msg); this.status = status; }
  }

  function chart(id) {
    const node = $(id);
    if (!node || typeof echarts === "undefined") return null;
    if (!charts[id]) charts[id] = echarts.init(node, null, {renderer: "canvas"});
    return charts[id];
  }
  window.addEventListener("resize", () => Object.values(charts).forEach(c => c.resize()));

  /* Run `fn` now and every `seconds` (live pages only); a failure shows one line. */
  function poll(fn, seconds) {
    let busy = false;
    async function tick() {
      if (busy) return;
      busy = true;
      try { await fn(); showError(""); pulse(); }
      catch (e) { showError(e.message); }
      finally { busy = false; }
    }
    tick();
    if (!REPORT && seconds > 0) setInterval(tick, seconds * 1000);
  }

  function pulse() {
    const dot = $("live");
    if (!dot) return;
    dot.classList.remove("on");
    void dot.offsetWidth;  // restart the animation
    dot.classList.add("on");
  }

  const TOOLTIP = {trigger: "item", renderMode: "richText", confine: true};

  // ---------------------------------------------------------------------------- actions

  const TOKEN_KEY = "dbdict-token";

  /* The action token: from the URL fragment (#token=...) that dbdict serve printed, kept in
     this tab's sessionStorage (never a cookie, so a cross-site request cannot carry it). */
  function setupToken() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    const bar = $("token-bar");
    if (bar && !sessionStorage.getItem(TOKEN_KEY)) {
      bar.hidden = false;
      $("token-save").addEventListener("click", () => {
        const v = $("token-input").value.trim();
        if (v) { sessionStorage.setItem(TOKEN_KEY, v); bar.hidden = true; }
      });
    }
  }

  async function act(action, body) {
    const resp = await fetch("/api/actions/" + action, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-Dbdict-Token": sessionStorage.getItem(TOKEN_KEY) || ""},
      body: JSON.stringify(body),
    });
    const out = await resp.json().catch(() => ({error: String(resp.status)}));
    if (!resp.ok) throw new Error(out.error || String(resp.status));
    return out;
  }

  // ---------------------------------------------------------------------------- overview

  function renderOverview(ov) {
    const box = $("ov-tables");
    if (!box) return;
    $("ov-summary").textContent = ov.tables.length + " table(s) · " + ov.failed_total +
      " failed job(s) in all · as of " + fmtTime(ov.now);
    const seen = new Set();
    ov.tables.forEach((t, i) => {
      const id = "ov-card-" + i;
      seen.add(id);
      let card = $(id);
      if (!card) {
        card = el("div", {class: "card", id: id, "data-table": t.table},
          el("h2", {}, t.table), el("div", {class: "counts"}),
          el("div", {class: "progress"}, el("div", {class: "bar"})),
          el("p", {class: "rates"}), el("div", {class: "chart small", id: id + "-chart"}),
          el("h3", {}, "Latest failures"), el("ul", {class: "failures"}));
        box.append(card);
      }
      const counts = clear(card.querySelector(".counts"));
      for (const s of CONFIG.statuses) {
        const n = t.counts[s] || 0;
        counts.append(el("span", {class: "count s-" + s + (n ? "" : " zero"), "data-status": s},
          el("b", {}, String(n)), " " + s));
      }
      card.querySelector(".bar").style.width = (100 * (t.progress || 0)).toFixed(1) + "%";
      card.querySelector(".rates").textContent =
        t.finished + " of " + t.total + " finished (" + (100 * (t.progress || 0)).toFixed(1) + "%) · " +
        t.done_last_hour + " done, " + t.failed_last_hour + " failed in the last hour · " +
        fmt(t.rate_per_hour) + " per hour · ETA " +
        (t.eta_seconds === null ? (t.finished === t.total ? "done" : "—") : fmtDuration(t.eta_seconds));
      const fails = clear(card.querySelector(".failures"));
      if (!t.failures.length) fails.append(el("li", {class: "muted"}, "none"));
      for (const f of t.failures) {
        fails.append(el("li", {}, jobLink(f.id), " ", badge(f.status), " ",
          el("span", {class: "muted"}, fmtTime(f.finished_at)), " ",
          el("span", {class: "errtext"}, (f.error || "").split("\n")[0].slice(0, 200))));
      }
      const c = chart(id + "-chart");
      if (c) c.setOption({
        animation: false, tooltip: {trigger: "axis", renderMode: "richText"},
        legend: {data: ["done", "failed"], top: 0},
        grid: {left: 40, right: 10, top: 28, bottom: 24},
        xAxis: {type: "category", data: t.per_minute.map(p => fmtTime(p.t).slice(11, 16))},
        yAxis: {type: "value", minInterval: 1, name: "per min"},
        series: [
          {name: "done", type: "bar", stack: "n", data: t.per_minute.map(p => p.done), itemStyle: {color: "#3a9d5d"}},
          {name: "failed", type: "bar", stack: "n", data: t.per_minute.map(p => p.failed), itemStyle: {color: "#d0453b"}},
        ],
      });
    });
    for (const card of Array.from(box.children)) if (!seen.has(card.id)) card.remove();
    renderWorkers(ov.workers || []);
  }

  function renderWorkers(workers) {
    const body = document.querySelector("#workers-table tbody");
    if (!body) return;
    clear(body);
    $("workers-none").hidden = workers.length > 0;
    for (const w of workers) {
      const jobs = el("span", {});
      (w.jobs || []).forEach((j, i) => { if (i) jobs.append(" "); jobs.append(jobLink(j)); });
      body.append(el("tr", {class: w.lost ? "lost" : "", "data-worker": w.id},
        el("td", {}, w.host), el("td", {class: "mono"}, w.id), el("td", {}, fmt(w.pid)),
        el("td", {}, w.lost ? el("b", {class: "lostflag"}, "LOST") : (w.draining ? w.state + " (draining)" : w.state)),
        el("td", {}, fmt(w.slots)), el("td", {}, w.gpus || "—"),
        el("td", {}, fmtDuration(w.heartbeat_age) + " ago"), el("td", {}, jobs)));
    }
  }

  function overviewPage() {
    poll(async () => renderOverview(await api("/api/overview", {table: CONFIG.table})), CONFIG.interval);
  }

  // ---------------------------------------------------------------------------- jobs

  /* Split "a=1 b='x y'" into ["a=1", "b='x y'"]: spaces inside quotes or brackets stay. */
  function splitWhere(text) {
    const out = [];
    let cur = "", quote = null, depth = 0;
    for (const ch of text) {
      if (quote) { cur += ch; if (ch === quote) quote = null; continue; }
      if (ch === "'" || ch === '"') { quote = ch; cur += ch; continue; }
      if (ch === "[" || ch === "(") depth++;
      if (ch === "]" || ch === ")") depth--;
      if (/\s/.test(ch) && depth <= 0) { if (cur) out.push(cur); cur = ""; continue; }
      cur += ch;
    }
    if (cur) out.push(cur);
    return out;
  }

  const jobsState = {table: "", statuses: [], where: "", sort: "id", desc: false, offset: 0, limit: 50};

  function readJobsQuery() {
    const q = new URLSearchParams(location.search);
    jobsState.table = q.get("table") || "";
    jobsState.statuses = q.getAll("status");
    jobsState.where = q.getAll("where").join(" ");
    jobsState.sort = q.get("sort") || "id";
    jobsState.desc = q.get("desc") === "1";
    jobsState.offset = Math.max(0, parseInt(q.get("offset") || "0", 10) || 0);
    jobsState.limit = parseInt(q.get("limit") || "50", 10) || 50;
  }

  function jobsParams() {
    return {table: CONFIG.table || jobsState.table, status: jobsState.statuses,
            where: splitWhere(jobsState.where), sort: jobsState.sort,
            desc: jobsState.desc ? "1" : "", offset: jobsState.offset, limit: jobsState.limit};
  }

  function writeJobsQuery() {
    if (REPORT) return;
    const q = new URLSearchParams();
    const p = jobsParams();
    for (const [k, v] of Object.entries(p)) {
      if (Array.isArray(v)) v.forEach(x => q.append(k, x));
      else if (v !== "" && v !== null && v !== undefined && !(k === "offset" && !v) &&
               !(k === "sort" && v === "id") && !(k === "limit" && v === 50) && !(k === "table" && CONFIG.table)) q.append(k, v);
    }
    history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q : ""));
  }

  function setupJobsFilter() {
    const tableSel = $("f-table");
    tableSel.append(el("option", {value: ""}, "all"));
    for (const t of CONFIG.tables || []) tableSel.append(el("option", {value: t}, t));
    tableSel.value = CONFIG.table || jobsState.table;
    tableSel.disabled = !!CONFIG.table;
    const sbox = $("f-status");
    for (const s of CONFIG.statuses) {
      sbox.append(el("label", {class: "s-" + s},
        el("input", {type: "checkbox", value: s, checked: jobsState.statuses.includes(s)}), s));
    }
    $("f-where").value = jobsState.where;
    if (REPORT) $("f-where").closest("label").hidden = true;
    $("page-size").value = String(jobsState.limit);
    $("jobs-filter").addEventListener("submit", ev => {
      ev.preventDefault();
      jobsState.table = tableSel.value;
      jobsState.statuses = Array.from(sbox.querySelectorAll("input:checked")).map(i => i.value);
      jobsState.where = $("f-where").value.trim();
      jobsState.offset = 0;
      refreshJobs();
    });
    $("f-clear").addEventListener("click", () => {
      sbox.querySelectorAll("input").forEach(i => { i.checked = false; });
      $("f-where").value = "";
      $("jobs-filter").requestSubmit();
    });
    $("page-prev").addEventListener("click", () => {
      jobsState.offset = Math.max(0, jobsState.offset - jobsState.limit); refreshJobs();
    });
    $("page-next").addEventListener("click", () => {
      jobsState.offset += jobsState.limit; refreshJobs();
    });
    $("page-size").addEventListener("change", ev => {
      jobsState.limit = parseInt(ev.target.value, 10); jobsState.offset = 0; refreshJobs();
    });
    const bulk = $("bulk-actions");
    if (bulk) bulk.addEventListener("click", async ev => {
      const action = ev.target.getAttribute && ev.target.getAttribute("data-action");
      if (!action) return;
      const p = jobsParams();
      const total = jobsState.lastTotal || 0;
      const what = (p.where.length || p.status.length || p.table) ? "the " + total + " job(s) the filter selects" : "ALL " + total + " jobs";
      if (!window.confirm(action + " " + what + "?")) return;
      const body = {table: p.table || null, where: p.where, status: p.status, all: true};
      if (action === "set-priority") body.priority = parseFloat($("bulk-priority").value);
      try {
        const out = await act(action, body);
        $("bulk-result").textContent = action + ": " + out.count + " job(s) changed";
        refreshJobs();
      } catch (e) { $("bulk-result").textContent = action + " failed: " + e.message; }
    });
  }

  function renderJobs(pg) {
    jobsState.lastTotal = pg.total;
    const err = $("jobs-error");
    err.hidden = true;
    const head = clear(document.querySelector("#jobs-table thead tr"));
    for (const c of pg.columns) {
      const arrow = pg.sort === c ? (pg.desc ? " ▼" : " ▲") : "";
      head.append(el("th", {"data-col": c, class: "sortable" + (pg.sort === c ? " sorted" : ""), title: "sort by " + c,
        onclick: () => {
          if (jobsState.sort === c) jobsState.desc = !jobsState.desc;
          else { jobsState.sort = c; jobsState.desc = false; }
          jobsState.offset = 0;
          refreshJobs();
        }}, c + arrow));
    }
    const body = clear(document.querySelector("#jobs-table tbody"));
    for (const r of pg.rows) {
      const tr = el("tr", {"data-id": r.id});
      for (const c of pg.columns) {
        let cell;
        if (c === "id") cell = jobLink(r.id);
        else if (c === "status") cell = badge(r.status);
        else if (c.endsWith("_at")) cell = fmtTime(r[c]);
        else cell = fmt(r[c]);
        tr.append(el("td", {"data-col": c}, cell));
      }
      body.append(tr);
    }
    const first = pg.total ? pg.offset + 1 : 0;
    const last = pg.offset + pg.rows.length;
    // A total the server only estimated (a very large selection) is said to be one.
    const about = pg.total_exact === false ? "about " : "";
    $("jobs-summary").textContent = first + "–" + last + " of " + about + pg.total + " job(s)";
    $("page-prev").disabled = pg.offset <= 0;
    $("page-next").disabled = about ? pg.rows.length < pg.limit : last >= pg.total;
  }

  async function refreshJobs() {
    writeJobsQuery();
    try {
      renderJobs(REPORT ? localJobsPage(jobsParams()) : await api("/api/jobs", jobsParams()));
    } catch (e) {
      if (e instanceof ApiError && e.status === 400) {
        const err = $("jobs-error");
        err.hidden = false;
        err.textContent = e.message;
        return;
      }
      throw e;
    }
  }

  /* The report's jobs table: the embedded rows, filtered by status, sorted and paged here. */
  function localJobsPage(p) {
    const all = DATA.jobs;
    let rows = all.rows.filter(r => !p.status.length || p.status.includes(r.status));
    if (p.table) rows = rows.filter(r => r.table === p.table);
    const key = p.sort, dir = p.desc ? -1 : 1;
    rows = rows.slice().sort((a, b) => {
      const x = a[key], y = b[key];
      const mx = x === null || x === undefined, my = y === null || y === undefined;
      if (mx || my) return mx === my ? a.id - b.id : (mx ? 1 : -1);  // missing last
      if (typeof x === "number" && typeof y === "number") return (x - y) * dir || a.id - b.id;
      return String(fmt(x)).localeCompare(String(fmt(y))) * dir || a.id - b.id;
    });
    return {total: rows.length, offset: p.offset, limit: p.limit, sort: p.sort, desc: p.desc,
            columns: all.columns, rows: rows.slice(p.offset, p.offset + p.limit)};
  }

  function jobsPage() {
    readJobsQuery();
    setupJobsFilter();
    if (REPORT) {
      const cap = $("jobs-cap");
      if (cap) cap.textContent = DATA.jobs.rows.length < DATA.jobs.total
        ? "This report holds the first " + DATA.jobs.rows.length + " of " + DATA.jobs.total + " jobs (by id)."
        : "";
      refreshJobs();
      return;
    }
    poll(refreshJobs, CONFIG.interval);
  }

  // ---------------------------------------------------------------------------- one job

  const JOB_FIELDS = ["table", "experiment", "status", "priority", "attempts", "retried", "restarts",
    "host", "worker_id", "workdir", "created_at", "booked_at", "heartbeat_at", "finished_at",
    "updated_at", "not_before"];

  function kvTable(node, obj, keys) {
    clear(node);
    const names = keys || Object.keys(obj).sort();
    if (!names.length) node.append(el("tr", {}, el("td", {class: "muted"}, "none")));
    for (const k of names) {
      const v = obj[k];
      let cell;
      if (k === "status") cell = badge(v);
      else if (/_at$|^not_before$/.test(k)) cell = fmtTime(v);
      else if (v !== null && typeof v === "object") cell = el("code", {}, JSON.stringify(v));
      else cell = fmt(v);
      node.append(el("tr", {"data-key": k}, el("th", {}, k), el("td", {}, cell)));
    }
  }

  let logChoice = null;
  let metricChoice = null;

  /* The job's reported metrics (channel.report): one key's curve by step, a <select> when
     there are several. Hidden when it reported none. */
  function drawJobMetrics(metrics) {
    const keys = Object.keys(metrics || {}).sort();
    const box = $("job-metrics-box");
    box.hidden = !keys.length;
    if (!keys.length) return;
    if (!keys.includes(metricChoice)) metricChoice = keys[0];
    const sel = $("metric-choice");
    if (Array.from(sel.options).map(o => o.value).join("\u0000") !== keys.join("\u0000")) {
      clear(sel);
      keys.forEach(k => sel.append(el("option", {value: k}, k)));
    }
    sel.value = metricChoice;
    sel.hidden = keys.length < 2;
    const c = chart("chart-job-metrics");
    if (!c) return;
    c.resize();  // it may have been drawn while hidden
    const pts = metrics[metricChoice];
    c.setOption({
      animation: false,
      tooltip: {trigger: "axis", renderMode: "richText"},
      grid: {left: 60, right: 20, top: 20, bottom: 30},
      xAxis: {type: "value", name: "step", minInterval: 1}, yAxis: {type: "value", name: metricChoice, scale: true},
      series: [{type: "line", name: metricChoice, showSymbol: pts.length < 50,
        data: pts.map(([step, v]) => [step, num(v)])}],
    }, {notMerge: true});
  }

  function renderJob(d) {
    const j = d.job;
    clear($("job-status")).append(badge(j.status));
    $("job-status").className = "";
    kvTable($("job-fields"), j, JOB_FIELDS.filter(k => k in j));
    $("job-error-box").hidden = !j.error;
    $("job-error").textContent = j.error || "";
    kvTable($("job-state"), d.state);
    drawJobMetrics(d.metrics);
    kvTable($("job-provenance"), d.provenance || {});
    const events = clear($("job-events"));
    for (const e of d.events) {
      events.append(el("li", {class: "ev-" + e.kind},
        el("time", {}, fmtTime(e.at)), " ", el("b", {}, e.kind), " ",
        el("span", {class: "muted"}, e.worker_id || ""), " ", e.detail || ""));
    }
    if (!d.events.length) events.append(el("li", {class: "muted"}, "no events"));
    const sel = $("log-choice");
    const options = d.logs.map(l => l.attempt + "/" + l.stream);
    const have = Array.from(sel.options).map(o => o.value);
    if (options.join() !== have.join()) {
      clear(sel);
      d.logs.forEach(l => sel.append(el("option", {value: l.attempt + "/" + l.stream},
        "attempt " + l.attempt + " " + l.stream + " (" + l.size + " bytes)")));
      // Follow the latest attempt's stdout unless the user chose another.
      const latest = d.logs.filter(l => l.stream === "stdout").map(l => l.attempt).sort((a, b) => b - a)[0];
      if (!logChoice || !options.includes(logChoice)) logChoice = latest ? latest + "/stdout" : options[0];
      if (logChoice) sel.value = logChoice;
    }
    const log = d.logs.find(l => l.attempt + "/" + l.stream === logChoice);
    const pre = $("log-tail");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = log ? log.tail : (d.logs.length ? "" : "no output kept (yet)");
    if (atBottom) pre.scrollTop = pre.scrollHeight;
    $("log-live").textContent = LIVE_STATUSES.includes(j.status) ? "live" : "";
    const actions = $("job-actions");
    if (actions) {
      $("act-cancel").disabled = !LIVE_STATUSES.includes(j.status);
      $("act-requeue").disabled = LIVE_STATUSES.includes(j.status);
    }
  }

  function jobPage() {
    const id = CONFIG.job_id;
    let last = null;
    const refresh = async () => { last = await api("/api/jobs/" + id); renderJob(last); };
    $("log-choice").addEventListener("change", ev => { logChoice = ev.target.value; if (last) renderJob(last); });
    $("metric-choice").addEventListener("change", ev => { metricChoice = ev.target.value; if (last) drawJobMetrics(last.metrics); });
    const actions = $("job-actions");
    if (actions) actions.addEventListener("click", async ev => {
      const action = ev.target.getAttribute && ev.target.getAttribute("data-action");
      if (!action) return;
      const body = {ids: [id]};
      if (action === "set-priority") body.priority = parseFloat($("job-priority").value);
      try {
        const out = await act(action, body);
        $("job-action-result").textContent = action + ": " + (out.count ? "done" : "nothing to change");
        await refresh();
      } catch (e) { $("job-action-result").textContent = action + " failed: " + e.message; }
    });
    poll(refresh, CONFIG.interval);
  }

  // ---------------------------------------------------------------------------- results

  /* The results page lives in results.js; it gets the helpers it shares with the others. */
  function resultsPage() {
    window.dbdictResults({$, el, clear, fmt, num, range, chart, jobLink, api, poll, showError,
      TOOLTIP, REPORT, DATA, CONFIG});
  }

  // ---------------------------------------------------------------------------- start

  function start() {
    if (CONFIG.actions) setupToken();
    try {
      if (CONFIG.page === "overview") overviewPage();
      else if (CONFIG.page === "jobs") jobsPage();
      else if (CONFIG.page === "job") jobPage();
      else if (CONFIG.page === "results") resultsPage();
      else if (REPORT) {
        renderOverview(DATA.overview);
        resultsPage();
        jobsPage();
      }
    } catch (e) { showError(e.message); throw e; }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
