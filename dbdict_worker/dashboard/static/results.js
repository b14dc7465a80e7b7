/* dbdict dashboard, the results page: a metric against a parameter (coloured by another),
   parallel coordinates from the parameters to the metric, learning curves, the best jobs.
   Loaded before app.js, which calls window.dbdictResults with the helpers it shares (see
   app.js for the rule on user strings: text nodes only; chart tooltips are canvas text). */
"use strict";

window.dbdictResults = function (ctx) {
  const {$, el, clear, fmt, num, range, chart, jobLink, api, poll, showError, TOOLTIP, REPORT,
    DATA, CONFIG} = ctx;


  const resultsState = {x: null, y: null, color: null, curve: null, minimize: true};

  function fillSelect(node, values, chosen, none, label) {
    const have = Array.from(node.options).map(o => o.value).join("\u0000");
    const want = (none ? [""] : []).concat(values);
    if (have !== want.join("\u0000")) {
      clear(node);
      if (none) node.append(el("option", {value: ""}, none));
      values.forEach(v => node.append(el("option", {value: v}, label ? label(v) : v)));
    }
    node.value = chosen || "";
  }

  function renderResults(r) {
    const numeric = new Set(r.keys.filter(k => k.kind === "number").map(k => k.key));
    const plain = r.keys.filter(k => k.kind !== "curve").map(k => k.key);
    const d = r.default || {};
    const pick = (cur, options, dflt) => (cur !== null && options.includes(cur)) ? cur : (options.includes(dflt) ? dflt : (options[0] || ""));
    const metrics = r.metrics.length ? r.metrics : Array.from(numeric);
    resultsState.y = pick(resultsState.y, metrics, d.y);
    resultsState.x = pick(resultsState.x, plain, d.x);
    resultsState.color = resultsState.color === "" ? "" : pick(resultsState.color, plain, d.color || "");
    // Curves: the metrics jobs reported (channel.report, "m:" + key), then the state keys
    // that hold a list of numbers ("s:" + key); a reported curve of the metric comes first.
    const reported = Object.keys(r.metric_curves || {});
    const curveChoices = reported.map(k => "m:" + k).concat(r.curves.map(k => "s:" + k));
    const firstCurve = reported.includes(r.metric) ? "m:" + r.metric : curveChoices[0];
    resultsState.curve = pick(resultsState.curve, curveChoices, firstCurve);
    if (resultsState.minimizeSet !== true) {
      // Unless the user ticked the box: the server's guess for its metric (error: lower).
      if (r.metric === resultsState.y && typeof r.minimize === "boolean") resultsState.minimize = r.minimize;
      else resultsState.minimize = !/acc|score|reward|auc|f1|precision|recall|return/i.test(resultsState.y || "");
    }
    fillSelect($("r-y"), metrics, resultsState.y);
    fillSelect($("r-x"), plain, resultsState.x);
    fillSelect($("r-color"), plain, resultsState.color, "(none)");
    fillSelect($("r-curve"), curveChoices, resultsState.curve, curveChoices.length ? null : "(no curves)",
      v => v.slice(2) + (v.startsWith("m:") ? " (reported)" : ""));
    $("r-min").checked = resultsState.minimize;
    $("r-summary").textContent = r.rows_shown + " of " + r.total + " job(s)";
    $("results-empty").hidden = r.rows.length > 0;
    drawScatter(r, numeric);
    drawParallel(r, numeric);
    drawCurves(r);
    drawBest(r);
  }

  function drawScatter(r, numeric) {
    const c = chart("chart-scatter");
    if (!c) return;
    const {x, y, color} = resultsState;
    const xNum = numeric.has(x);
    const pts = r.rows.filter(row => num(row[y]) !== null && row[x] !== undefined && row[x] !== null);
    const cats = xNum ? null : Array.from(new Set(pts.map(row => fmt(row[x])))).sort();
    const point = row => ({value: [xNum ? num(row[x]) : fmt(row[x]), num(row[y])], id: row.id});
    let series, visualMap = null;
    if (color && numeric.has(color) && new Set(pts.map(p => p[color])).size > 12) {
      series = [{type: "scatter", name: y, symbolSize: 9,
        data: pts.map(row => ({value: [...point(row).value, num(row[color])], id: row.id}))}];
      const [lo, hi] = range(pts.map(p => num(p[color])));
      visualMap = {type: "continuous", dimension: 2, min: lo, max: hi,
        text: [color, ""], calculable: true, right: 0, top: 30, inRange: {color: ["#2c7bb6", "#ffffbf", "#d7191c"]}};
    } else {
      const groups = new Map();
      for (const row of pts) {
        const g = color ? color + "=" + fmt(row[color]) : y;
        if (!groups.has(g)) groups.set(g, []);
        groups.get(g).push(point(row));
      }
      series = Array.from(groups.entries()).sort().map(([name, data]) => ({type: "scatter", name, symbolSize: 9, data}));
    }
    c.setOption({
      animation: false, title: {text: y + " vs " + x, left: "center", textStyle: {fontSize: 13}},
      tooltip: {...TOOLTIP, formatter: p => "job " + (p.data.id) + "\n" + x + " = " + p.value[0] + "\n" + y + " = " + fmt(p.value[1])},
      legend: visualMap ? {show: false} : {type: "scroll", bottom: 0},
      grid: {left: 60, right: visualMap ? 90 : 20, top: 40, bottom: 50},
      xAxis: xNum ? {type: "value", name: x, scale: true, nameLocation: "middle", nameGap: 25} : {type: "category", data: cats, name: x, nameLocation: "middle", nameGap: 25},
      yAxis: {type: "value", name: y, scale: true},
      visualMap: visualMap || undefined,
      series,
    }, {notMerge: true});
  }

  function drawParallel(r, numeric) {
    const c = chart("chart-parallel");
    if (!c) return;
    const y = resultsState.y;
    const params = r.params.filter(p => p !== y).slice(0, 12);
    const dims = params.concat([y]);
    const rows = r.rows.filter(row => num(row[y]) !== null);
    const axes = dims.map((k, i) => {
      if (numeric.has(k)) return {dim: i, name: k, type: "value", scale: true};
      return {dim: i, name: k, type: "category", data: Array.from(new Set(rows.map(row => fmt(row[k])))).sort()};
    });
    const [lo, hi] = range(rows.map(row => num(row[y])));
    c.setOption({
      animation: false, title: {text: "parameters → " + y, left: "center", textStyle: {fontSize: 13}},
      tooltip: {...TOOLTIP, formatter: p => "job " + rows[p.dataIndex].id},
      parallelAxis: axes, parallel: {left: 50, right: 90, top: 50, bottom: 30},
      visualMap: {type: "continuous", dimension: dims.length - 1, min: lo, max: hi, right: 0, top: 40, calculable: true,
        inRange: {color: resultsState.minimize ? ["#1a9850", "#fee08b", "#d73027"] : ["#d73027", "#fee08b", "#1a9850"]}},
      series: [{type: "parallel", lineStyle: {width: 1, opacity: 0.5},
        data: rows.map(row => dims.map(k => numeric.has(k) ? num(row[k]) : fmt(row[k])))}],
    }, {notMerge: true});
  }

  function drawCurves(r) {
    const c = chart("chart-curves");
    if (!c) return;
    const choice = resultsState.curve;
    $("chart-curves").hidden = !choice;
    if (!choice) { c.clear(); return; }
    const key = choice.slice(2);
    if (choice.startsWith("m:")) { drawReported(c, r, key); return; }
    const y = resultsState.y;
    const sign = resultsState.minimize ? 1 : -1;
    // The 20 best jobs (by the metric) that have the curve; the others would be a hairball.
    const rows = r.rows.filter(row => Array.isArray(row[key]))
      .sort((a, b) => ((num(a[y]) ?? Infinity * sign) - (num(b[y]) ?? Infinity * sign)) * sign).slice(0, 20);
    c.setOption({
      animation: false, title: {text: "learning curves: " + key + " (best 20 by " + y + ")", left: "center", textStyle: {fontSize: 13}},
      tooltip: {trigger: "item", renderMode: "richText", formatter: p => p.seriesName + "\nstep " + p.value[0] + ": " + fmt(p.value[1])},
      grid: {left: 60, right: 20, top: 40, bottom: 30},
      xAxis: {type: "value", name: "step", minInterval: 1}, yAxis: {type: "value", name: key, scale: true},
      series: rows.map(row => ({type: "line", name: "job " + row.id, showSymbol: false,
        data: row[key].map((v, i) => [i, num(v)])})),
    }, {notMerge: true});
  }

  /* The reported curves of the best jobs (the server picked them, best first, by its
     metric): step on x, the value on y. */
  function drawReported(c, r, key) {
    const jobs = (r.metric_curves || {})[key] || [];
    const by = r.metric ? " (best " + jobs.length + " by " + r.metric + ")" : "";
    c.setOption({
      animation: false, title: {text: "learning curves: " + key + by, left: "center", textStyle: {fontSize: 13}},
      tooltip: {trigger: "item", renderMode: "richText", formatter: p => p.seriesName + "\nstep " + p.value[0] + ": " + fmt(p.value[1])},
      grid: {left: 60, right: 20, top: 40, bottom: 30},
      xAxis: {type: "value", name: "step", minInterval: 1}, yAxis: {type: "value", name: key, scale: true},
      series: jobs.map(([id, pts]) => ({type: "line", name: "job " + id, showSymbol: pts.length < 2,
        data: pts.map(([step, v]) => [step, num(v)])})),
    }, {notMerge: true});
  }

  function drawBest(r) {
    const y = resultsState.y;
    const sign = resultsState.minimize ? 1 : -1;
    // The server's best rows are exact over the whole selection; the plotted rows may be
    // its first RESULTS_LIMIT only, so they serve only for another metric or direction.
    const exact = r.metric === y && r.minimize === resultsState.minimize && Array.isArray(r.best);
    const best = exact ? r.best.filter(row => num(row[y]) !== null)
      : r.rows.filter(row => num(row[y]) !== null).sort((a, b) => (a[y] - b[y]) * sign).slice(0, 10);
    const cols = ["id", y].concat(r.params.filter(p => p !== y));
    const head = clear(document.querySelector("#best-table thead tr"));
    cols.forEach(c => head.append(el("th", {}, c)));
    const body = clear(document.querySelector("#best-table tbody"));
    for (const row of best) {
      body.append(el("tr", {"data-id": row.id}, ...cols.map(c => el("td", {}, c === "id" ? jobLink(row.id) : fmt(row[c])))));
    }
  }

  function resultsPage() {
    let last = null;
    const redraw = () => { if (last) renderResults(last); };
    $("r-y").addEventListener("change", ev => { resultsState.y = ev.target.value; resultsState.minimizeSet = false; redraw(); if (!REPORT) refresh().catch(e => showError(e.message)); });
    $("r-x").addEventListener("change", ev => { resultsState.x = ev.target.value; redraw(); });
    $("r-color").addEventListener("change", ev => { resultsState.color = ev.target.value; redraw(); });
    $("r-curve").addEventListener("change", ev => { resultsState.curve = ev.target.value; redraw(); });
    $("r-min").addEventListener("change", ev => { resultsState.minimize = ev.target.checked; resultsState.minimizeSet = true; redraw(); });
    if (REPORT) { last = DATA.results; redraw(); return; }
    const refresh = async () => {
      last = await api("/api/results", {table: CONFIG.table, metric: resultsState.y});
      redraw();
    };
    poll(refresh, Math.max(CONFIG.interval * 5, 10));
  }

  resultsPage();
};
