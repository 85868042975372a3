// MiniQuantDesk dashboard: follows /api/stream (server-sent events read through fetch, so a
// token header can go with it), renders with textContent only (no data ever becomes HTML;
// the equity chart is SVG the server drew from numbers).
"use strict";
const $ = (id) => document.getElementById(id);
const state = { lastSeq: 0, overview: null, scope: "run", chartSeq: -1, chartAt: 0, timeline: [] };
const TOKEN_KEY = "mqd-dashboard-token";

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const t = $("token").value || sessionStorage.getItem(TOKEN_KEY) || "";
  if (t) h["X-MQD-Token"] = t;
  return h;
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function num(v) { return v === null || v === undefined ? "-" : v; }
// the API's numbers are exact decimal strings; the page rounds money to cents for reading
function m2(v) { return v === null || v === undefined ? "-" : Number(v).toFixed(2); }
function q6(v) { return v === null || v === undefined ? "-" : String(Number(Number(v).toFixed(6))); }
function signed(td, v) {
  td.classList.remove("pos", "neg");
  const n = v === null || v === undefined ? 0 : Number(v);
  if (n < 0) td.classList.add("neg"); else if (n > 0) td.classList.add("pos");
  return td;
}
function cell(tr, v, cls) { const td = el("td", num(v), cls); tr.appendChild(td); return td; }
function link(text, onclick) { const a = el("button", text, "link"); a.addEventListener("click", onclick); return a; }
function badge(id, text, kind) { const b = $(id); b.textContent = text; b.className = "badge " + (kind || ""); }
function fill(tbody, rows) { tbody.replaceChildren(...rows); }

function render(o) {
  state.overview = o;
  $("last-seq").textContent = o.last_seq;
  $("catch-up").textContent = o.caught_up ? "" : " (still reading the log)";
  $("as-of").textContent = o.as_of ? o.as_of.replace("T", " ").slice(0, 19) + " UTC" : "-";
  $("run").textContent = o.run.id ? `${o.run.id} · ${o.run.mode} · ${o.run.running ? "running" : "ended: " + (o.run.ended || "-")}` : "no run";
  const t = o.trading;
  badge("trading-state", t.state, t.state === "active" ? "ok" : t.state === "halted" ? "bad" : "warn");
  $("trading-state").title = t.reason;
  const ks = t.kill_switch === "off" ? "kill switch off" : `kill switch ${t.kill_switch} by ${t.kill_actor}: ${t.kill_reason}`;
  badge("kill-switch", ks, t.kill_switch === "off" ? "ok" : t.kill_switch === "verified" ? "warn" : "bad");
  const s = o.stream;
  badge("stream", s.connected === null ? "stream: n/a" : s.connected ? "stream connected" : `stream ${s.state} since ${(s.since || "").slice(11, 19)}`,
        s.connected === null ? "" : s.connected ? "ok" : "bad");
  $("equity-now").textContent = num(o.account.equity);
  $("cash").textContent = num(o.account.cash);
  for (const scope of ["run", "session"]) {
    const e = o.equity[scope];
    signed($(scope + "-change"), e.change).textContent = num(e.change);
    $(scope + "-dd").textContent = num(e.current_drawdown);
    $(scope + "-maxdd").textContent = num(e.max_drawdown);
  }
  const p = o.pnl;
  signed($("pnl-today"), p.today).textContent = num(p.today);
  $("pnl-today-limit").textContent = p.today_limit ? "-" + p.today_limit : "-";
  signed($("pnl-week"), p.week).textContent = num(p.week);
  $("pnl-week-limit").textContent = p.week_limit ? "-" + p.week_limit : "-";
  meter("meter-today", p.today, p.today_limit); meter("meter-week", p.week, p.week_limit);
  const d = o.day_trades;
  $("day-trades").textContent = d.limit === null ? d.used : `${d.used} / ${d.limit}`;
  $("day-trade-mode").textContent = `in 5 business days · guard ${d.mode}`;

  fill($("positions").tBodies[0], o.positions.map((x) => {
    const tr = el("tr"); tr.dataset.symbol = x.symbol;
    cell(tr, x.symbol); cell(tr, q6(x.qty), "num qty"); cell(tr, x.avg_cost === null ? "-" : Number(x.avg_cost).toFixed(4), "num"); cell(tr, x.last_price, "num");
    signed(cell(tr, m2(x.unrealized_pnl), "num unrealized"), x.unrealized_pnl); signed(cell(tr, m2(x.realized_pnl), "num realized"), x.realized_pnl);
    cell(tr, m2(x.fees), "num");
    const pr = x.protection;
    cell(tr, !pr ? "-" : pr.stop_price ? `stop ${pr.stop_price}${pr.live_at_broker ? " (live)" : pr.kind === "engine_side" ? " (engine-side only)" : " (intent)"}` : "none", pr && !pr.stop_price ? "neg protection" : "protection");
    const ev = el("td");
    if (x.fill_seqs.length) ev.appendChild(link(`${x.fill_seqs.length} fill(s)`, () => showFills(x.symbol)));
    tr.appendChild(ev);
    return tr;
  }));
  fill($("orders").tBodies[0], o.open_orders.map((x) => {
    const tr = el("tr"); tr.dataset.coid = x.client_order_id;
    const td = el("td"); td.appendChild(link(x.client_order_id, () => showChain(x.client_order_id))); tr.appendChild(td);
    cell(tr, x.symbol); cell(tr, x.side); cell(tr, x.order_type); cell(tr, x.qty ? q6(x.qty) : ("$" + m2(x.notional)), "num");
    cell(tr, [x.limit_price && "limit " + x.limit_price, x.stop_price && "stop " + x.stop_price].filter(Boolean).join(" ") || "-", "num");
    cell(tr, x.status); cell(tr, q6(x.filled_qty), "num");
    const lg = el("td");
    for (const l of x.legs) { lg.appendChild(link(`${l.role} ${l.stop_price || l.limit_price || ""} ${l.status}`, () => showChain(l.client_order_id))); lg.appendChild(document.createTextNode(" ")); }
    if (!x.legs.length) lg.textContent = x.parent_id ? `${x.leg_role || "leg"} of ${x.parent_id.slice(0, 16)}` : "-";
    tr.appendChild(lg);
    return tr;
  }));
  fill($("freshness").tBodies[0], o.freshness.map((x) => {
    const tr = el("tr"); cell(tr, x.symbol); cell(tr, x.last_bar_start.slice(5, 16).replace("T", " ")); cell(tr, x.close, "num");
    cell(tr, Number(x.age_s).toFixed(0) + " s", "num " + (x.stale ? "neg" : "pos")); cell(tr, x.limit_s + " s", "num");
    return tr;
  }));
  fill($("rejections").tBodies[0], o.rejections.by_code.map((x) => {
    const tr = el("tr"); cell(tr, x.code); cell(tr, x.count, "num");
    const td = el("td"); td.appendChild(link(`seq ${x.last_seq}`, () => filterTimeline({ order: "", type: "risk_rejected" }))); td.title = x.last; tr.appendChild(td);
    return tr;
  }));
  const probs = [];
  for (const a of o.anomalies.recent) probs.push(el("li", `seq ${a.seq} anomaly: ${a.client_order_id} ${a.event_type} in ${a.state} ${a.detail}`, "neg"));
  for (const x of o.discrepancies.recent) probs.push(el("li", `seq ${x.seq} ${x.type}: ${x.summary}`, "neg"));
  for (const x of o.data_problems) probs.push(el("li", `seq ${x.seq} ${x.type}: ${x.summary}`));
  for (const x of o.strategy_errors) probs.push(el("li", `seq ${x.seq} ${x.type}: ${x.summary}`, "neg"));
  if (!probs.length) probs.push(el("li", `none (${o.anomalies.count} anomalies, ${o.discrepancies.count} discrepancies)`, "muted"));
  $("problems").replaceChildren(...probs);
  const al = o.alerts.recent.map((x) => el("li", `seq ${x.seq} ${x.summary}`));
  if (!al.length) al.push(el("li", "none sent", "muted"));
  $("alerts").replaceChildren(...al);

  const can = o.control.available;
  for (const id of ["btn-halt", "btn-flatten", "btn-resume"]) $(id).disabled = !can;
  $("control-note").textContent = can ? "the service is running: commands go to it with actor 'dashboard' and need the token"
                                       : "no service is running this log: controls are offered only while one runs";
  refreshChart(o.last_seq);
}

function meter(id, value, limit) {
  const v = Number(value || 0), l = Number(limit || 0);
  $(id).style.width = l > 0 && v < 0 ? Math.min(100, (-v / l) * 100) + "%" : "0";
}

async function refreshChart(seq) {
  const now = Date.now();
  if (seq === state.chartSeq) return;
  if (now - state.chartAt < 2000) { // at most one redraw per 2 s; the last update still lands
    clearTimeout(state.chartTimer); state.chartTimer = setTimeout(() => refreshChart(state.lastSeq), 2100); return;
  }
  state.chartSeq = seq; state.chartAt = now;
  const r = await fetch(`/api/equity.svg?scope=${state.scope}`, { headers: headers() });
  if (r.ok) $("chart").innerHTML = await r.text(); // server-drawn from numbers only
}

function addTimeline(entries) {
  for (const e of entries) state.timeline.push(e);
  if (state.timeline.length > 3000) state.timeline = state.timeline.slice(-2000);
  if (!state.filter) renderTimeline(state.timeline);
}
function timelineRow(e) {
  const tr = el("tr"); tr.dataset.seq = e.seq;
  cell(tr, e.seq, "num"); cell(tr, e.ts.slice(5, 19).replace("T", " ")); cell(tr, e.type); cell(tr, e.symbol || "");
  const td = el("td");
  const id = e.client_order_id || e.intent_id;
  if (id) { td.appendChild(link(id, () => showChain(id))); td.appendChild(document.createTextNode(" ")); }
  td.appendChild(document.createTextNode(e.summary)); tr.appendChild(td);
  return tr;
}
function renderTimeline(entries) {
  const hideBars = $("f-nobars").checked;
  const rows = [];
  for (let i = entries.length - 1; i >= 0 && rows.length < 150; i--) {
    if (hideBars && entries[i].type === "bar") continue;
    rows.push(timelineRow(entries[i]));
  }
  fill($("timeline").tBodies[0], rows);
}
async function filterTimeline(f) {
  if (f) { if (f.type !== undefined) $("f-type").value = f.type; if (f.order !== undefined) $("f-order").value = f.order; }
  const q = new URLSearchParams({ limit: "500" });
  const type = $("f-type").value.trim(), sym = $("f-symbol").value.trim(), order = $("f-order").value.trim();
  if (type) q.set("types", type); if (sym) q.set("symbol", sym); if (order) q.set("order", order);
  state.filter = type || sym || order ? q.toString() : null;
  if (!state.filter) { renderTimeline(state.timeline); return; }
  const r = await fetch("/api/timeline?" + q, { headers: headers() });
  const body = await r.json();
  if (!r.ok) { fill($("timeline").tBodies[0], [el("tr", body.error, "neg")]); return; }
  renderTimeline(body.entries);
}

async function showChain(id) {
  const r = await fetch("/api/chain/" + encodeURIComponent(id), { headers: headers() });
  const body = await r.json();
  $("chain-panel").hidden = false;
  $("chain-id").textContent = id;
  if (!r.ok) { $("chain-head").textContent = body.error; $("chain").replaceChildren(); return; }
  const reasons = body.reasons.map((x) => `${x.code}: ${x.message}`).join("; ");
  $("chain-head").textContent = `${body.symbol || ""} · decision ${body.decision || "none"}${reasons ? " (" + reasons + ")" : ""} · orders ${body.client_order_ids.join(", ") || "-"}` +
    (body.orders.length ? ` · ${body.orders.map((o) => o.status + " " + o.filled_qty).join(", ")}` : "");
  $("chain").replaceChildren(...body.steps.map((s) => {
    const li = el("li"); li.dataset.type = s.type;
    li.appendChild(el("span", s.role, "role"));
    li.appendChild(document.createTextNode(`seq ${s.seq} · ${s.ts.slice(0, 19).replace("T", " ")} · ${s.type} · ${s.summary}`));
    return li;
  }));
  $("chain-panel").scrollIntoView({ block: "nearest" });
}

async function showFills(symbol) {
  const r = await fetch(`/api/positions/${encodeURIComponent(symbol)}/fills`, { headers: headers() });
  const body = await r.json();
  const box = $("fills");
  if (!r.ok) { box.textContent = body.error; return; }
  const ul = el("ul", null, "plain");
  ul.appendChild(el("li", `fills behind ${symbol} (since it was last flat):`, "muted"));
  for (const f of body.fills) {
    const li = el("li"); li.appendChild(link(f.client_order_id, () => showChain(f.client_order_id)));
    li.appendChild(document.createTextNode(` seq ${f.seq} ${f.side} ${f.qty} @ ${f.price} fee ${f.fee}`)); ul.appendChild(li);
  }
  box.replaceChildren(ul);
}

async function control(cmd) {
  const reason = $("reason").value.trim();
  const token = $("token").value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  $("control-result").textContent = `${cmd}: sending...`;
  try {
    const r = await fetch("/api/control/" + cmd, { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify({ reason }) });
    const body = await r.json();
    $("control-result").textContent = r.ok ? `${cmd}: done ${JSON.stringify(body)}` : `${cmd} refused (${r.status}): ${body.error || JSON.stringify(body)}`;
    $("control-result").className = r.ok ? "pos" : "neg";
  } catch (e) {
    $("control-result").textContent = `${cmd} failed: ${e}`; $("control-result").className = "neg";
  }
}

async function follow() {
  for (;;) {
    try {
      const r = await fetch(`/api/stream?after_seq=${state.lastSeq}`, { headers: headers() });
      if (!r.ok) { badge("live", `offline (${r.status})`, "bad"); await new Promise((ok) => setTimeout(ok, 3000)); continue; }
      badge("live", "live", "ok");
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const msg = JSON.parse(data);
          state.lastSeq = msg.overview.last_seq;
          try { addTimeline(msg.timeline); render(msg.overview); }
          catch (e) { console.error("dashboard render: " + e + " " + (e.stack || "")); } // keep following
        }
      }
    } catch (e) { console.error("dashboard stream: " + e + " " + (e.stack || "")); }
    badge("live", "reconnecting", "warn");
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

$("btn-halt").addEventListener("click", () => control("halt"));
$("btn-flatten").addEventListener("click", () => control("flatten"));
$("btn-resume").addEventListener("click", () => control("resume"));
$("f-apply").addEventListener("click", () => filterTimeline());
$("f-nobars").addEventListener("change", () => filterTimeline());
$("chain-close").addEventListener("click", () => { $("chain-panel").hidden = true; });
$("scope-run").addEventListener("click", () => { state.scope = "run"; state.chartSeq = -1; state.chartAt = 0; refreshChart(state.lastSeq); });
$("scope-session").addEventListener("click", () => { state.scope = "session"; state.chartSeq = -1; state.chartAt = 0; refreshChart(state.lastSeq); });
$("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
follow();
