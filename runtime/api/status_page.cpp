#include "runtime/api/status_page.hpp"

namespace spool::api {

std::string_view status_page_html() {
  static constexpr std::string_view page = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spool</title>
<link rel="icon" href="data:,">
<style>
  :root { --fg: #1d232a; --muted: #68737d; --line: #e3e7eb; --bg: #f7f8fa; --accent: #2a6fdb;
          --ok: #1f8a4c; --warn: #b7791f; --bad: #c53030; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; align-items: center; gap: 16px; padding: 10px 20px; background: #fff;
           border-bottom: 1px solid var(--line); }
  header h1 { font-size: 18px; margin: 0; }
  header .live { color: var(--muted); font-size: 12px; }
  main { display: grid; grid-template-columns: minmax(420px, 1fr) minmax(420px, 1.2fr); gap: 16px;
         padding: 16px 20px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
  h2 { font-size: 14px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em;
       color: var(--muted); }
  table { width: 100%; border-collapse: collapse; }
  th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { font-weight: 600; color: var(--muted); font-size: 12px; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr.job { cursor: pointer; }
  tr.job:hover, tr.job.selected { background: #eef4ff; }
  .state { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 12px; background: #edf0f3; }
  .state.completed, .state.done { background: #e3f5ea; color: var(--ok); }
  .state.failed, .state.cancelled { background: #fdecec; color: var(--bad); }
  .state.awaiting_approval { background: #fff4dd; color: var(--warn); font-weight: 600; }
  .state.running { background: #e7efff; color: var(--accent); }
  .bar { height: 6px; background: var(--line); border-radius: 3px; overflow: hidden; min-width: 60px; }
  .bar > i { display: block; height: 100%; background: var(--accent); }
  .filters { display: flex; gap: 8px; margin-bottom: 8px; }
  input, select, button { font: inherit; padding: 4px 8px; border: 1px solid var(--line); border-radius: 6px; }
  button { background: #fff; cursor: pointer; }
  button.primary { background: var(--ok); border-color: var(--ok); color: #fff; }
  button.danger { background: #fff; border-color: var(--bad); color: var(--bad); }
  .frames { display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0; }
  .frames img { width: 160px; height: 90px; object-fit: cover; border-radius: 4px; border: 1px solid var(--line); }
  video { width: 100%; max-height: 360px; background: #000; border-radius: 6px; }
  .review { display: flex; gap: 8px; align-items: center; margin: 10px 0; padding: 10px;
            background: #fff8e8; border: 1px solid #f3dfae; border-radius: 6px; }
  .muted { color: var(--muted); }
  .error { color: var(--bad); }
  #login { display: none; gap: 8px; align-items: center; }
  pre { white-space: pre-wrap; word-break: break-word; background: var(--bg); padding: 8px; border-radius: 6px;
        max-height: 200px; overflow: auto; font-size: 12px; }
</style>
</head>
<body>
<header>
  <h1>Spool</h1>
  <span class="live" id="live">connecting…</span>
  <span id="money" class="muted"></span>
  <span style="flex:1"></span>
  <form id="login"><input id="token" type="password" placeholder="API token" size="36">
    <button>Use token</button></form>
</header>
<main>
  <div>
    <section>
      <h2>Pipeline</h2>
      <table id="stages"><thead><tr><th>stage</th><th>running / limit</th><th class="num">ready</th>
        <th class="num">waiting</th><th class="num">done</th><th class="num">failed</th></tr></thead>
        <tbody></tbody></table>
    </section>
    <section style="margin-top:16px">
      <h2>Providers</h2>
      <table id="providers"><thead><tr><th>provider</th><th class="num">in flight</th>
        <th class="num">tokens</th><th class="num">quota</th><th>state</th></tr></thead><tbody></tbody></table>
      <p class="muted" id="no-providers" style="display:none">No providers configured.</p>
    </section>
    <section style="margin-top:16px">
      <h2>Jobs</h2>
      <div class="filters">
        <select id="filter-state">
          <option value="">every state</option><option>queued</option><option>running</option>
          <option>awaiting_approval</option><option>completed</option><option>partially_completed</option>
          <option>failed</option><option>cancelled</option>
        </select>
        <input id="filter-client" placeholder="client">
      </div>
      <table id="jobs"><thead><tr><th>job</th><th>client</th><th>channel</th><th>state</th>
        <th class="num">cost</th></tr></thead><tbody></tbody></table>
    </section>
  </div>
  <section id="detail">
    <h2>Job</h2>
    <p class="muted" id="detail-empty">Pick a job on the left.</p>
    <div id="detail-body" style="display:none">
      <p><b id="detail-title"></b> <span class="state" id="detail-state"></span>
         <span class="muted" id="detail-meta"></span></p>
      <div class="review" id="review" style="display:none">
        <span>The storyboard waits for your review.</span>
        <button class="primary" id="approve">Approve</button>
        <input id="reject-reason" placeholder="reason to reject" size="24">
        <button class="danger" id="reject">Reject</button>
      </div>
      <p class="error" id="detail-error"></p>
      <div class="frames" id="frames"></div>
      <div id="video"></div>
      <table id="detail-stages"><thead><tr><th>stage</th><th>state</th><th class="num">attempt</th>
        <th class="num">cost</th><th>detail</th></tr></thead><tbody></tbody></table>
    </div>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let token = localStorage.getItem("spool-token") || "";
let selected = null, selectedEtag = "", pollSeq = 0;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) =>
    ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"})[c]);
}
async function api(path, opts = {}) {
  opts.headers = Object.assign({}, opts.headers || {});
  if (token) opts.headers["Authorization"] = "Bearer " + token;
  const res = await fetch(path, opts);
  if (res.status === 401) { $("login").style.display = "flex"; throw new Error("a token is needed"); }
  return res;
}
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  localStorage.setItem("spool-token", token);
  $("login").style.display = "none";
  refresh();
});

function stateBadge(s) { return `<span class="state ${esc(s)}">${esc(s)}</span>`; }

async function refreshStatus() {
  const res = await api("/api/v2/status");
  if (!res.ok) return;
  const st = await res.json();
  $("stages").tBodies[0].innerHTML = st.stages.map((s) => {
    const c = s.counts || {}, running = c.running || 0, limit = s.limit || 0;
    const pct = limit ? Math.min(100, 100 * running / limit) : 0;
    return `<tr><td>${esc(s.name)}${s.approval ? " <span class='muted'>(approval)</span>" : ""}</td>
      <td><div style="display:flex;gap:6px;align-items:center">
        <div class="bar" style="flex:1"><i style="width:${pct}%"></i></div>${running} / ${limit}</div></td>
      <td class="num">${c.ready || 0}</td><td class="num">${(c.blocked || 0) + (c.scheduled || 0)}</td>
      <td class="num">${c.done || 0}</td><td class="num">${c.failed || 0}</td></tr>`;
  }).join("");
  const prov = st.providers || [];
  $("no-providers").style.display = prov.length ? "none" : "block";
  $("providers").tBodies[0].innerHTML = prov.map((p) => `<tr><td>${esc(p.name)}</td>
      <td class="num">${p.running}${p.max_concurrent ? " / " + p.max_concurrent : ""}</td>
      <td class="num">${p.tokens ?? "–"}</td>
      <td class="num">${p.quota_units ? Math.round(p.quota_used) + " / " + p.quota_units : "–"}</td>
      <td>${p.paused ? "<span class='state failed'>paused</span> " : ""}${stateBadge("breaker " + p.breaker)}</td></tr>`).join("");
  const m = st.cost;
  $("money").textContent = m ? `today $${m.spent.toFixed(2)} spent, $${m.reserved.toFixed(2)} reserved` +
      (m.hard_usd ? ` of $${m.hard_usd}` : "") : "";
  $("live").textContent = `${st.workers} worker${st.workers === 1 ? "" : "s"} live · updated ${new Date().toLocaleTimeString()}`;
}

async function refreshJobs() {
  const q = new URLSearchParams({limit: "50"});
  if ($("filter-state").value) q.set("state", $("filter-state").value);
  if ($("filter-client").value.trim()) q.set("client", $("filter-client").value.trim());
  const res = await api("/api/v2/jobs?" + q);
  if (!res.ok) return;
  const { jobs } = await res.json();
  $("jobs").tBodies[0].innerHTML = jobs.map((j) =>
    `<tr class="job${j.id === selected ? " selected" : ""}" id="job-${j.id}" data-id="${j.id}">
      <td>#${j.id}</td><td>${esc(j.client_id) || "<span class='muted'>–</span>"}</td><td>${esc(j.channel_id)}</td>
      <td>${stateBadge(j.state)}</td><td class="num">$${j.actual_cost.toFixed(2)}</td></tr>`).join("");
}
$("jobs").addEventListener("click", (e) => {
  const row = e.target.closest("tr.job");
  if (row) select(Number(row.dataset.id));
});
$("filter-state").addEventListener("change", refreshJobs);
$("filter-client").addEventListener("input", refreshJobs);

// A file a stage wrote (an absolute path under .../tasks/<id>/<stage>/<name>)
// as a URL of the API; with a token, fetched and shown from a blob.
async function fileUrl(path) {
  const m = /\/tasks\/(\d+)\/([^/]+)\/([^/]+)$/.exec(String(path));
  if (!m) return null;
  const url = `/api/v2/jobs/${m[1]}/files/${m[2]}/${m[3]}`;
  if (!token) return url;
  const res = await api(url);
  return res.ok ? URL.createObjectURL(await res.blob()) : null;
}

async function showJob(job) {
  $("detail-empty").style.display = "none";
  $("detail-body").style.display = "block";
  $("detail-title").textContent = `Job #${job.id}`;
  $("detail-state").className = "state " + job.state;
  $("detail-state").textContent = job.state;
  $("detail-meta").textContent = `${job.client_id || "no client"} · ${job.channel_id} · ` +
    `$${job.actual_cost.toFixed(2)} of $${job.estimated_cost.toFixed(2)} estimated`;
  $("review").style.display = job.state === "awaiting_approval" ? "flex" : "none";
  $("detail-error").textContent = job.error || "";
  $("detail-stages").tBodies[0].innerHTML = job.stages.map((s) => `<tr>
      <td>${esc(s.stage)}</td><td>${stateBadge(s.awaits_approval ? "awaiting_approval" : s.state)}</td>
      <td class="num">${s.attempt}</td><td class="num">$${(s.cost || 0).toFixed(2)}</td>
      <td class="muted">${esc(s.error || "")}</td></tr>`).join("");
  const frames = [];
  for (const s of job.stages)
    for (const f of (s.output && s.output.frames) || []) frames.push(f);
  const urls = await Promise.all(frames.map(fileUrl));
  $("frames").innerHTML = urls.filter(Boolean).map((u) => `<img src="${esc(u)}" alt="storyboard frame">`).join("");
  const v = job.video_url ? await fileUrl(job.video_url) : null;
  const have = $("video").dataset.src;
  if (v && have !== job.video_url) {
    $("video").innerHTML = `<video controls src="${esc(v)}"></video>`;
    $("video").dataset.src = job.video_url;
  } else if (!v) {
    $("video").innerHTML = "";
    $("video").dataset.src = "";
  }
}

// The selected job: shown at once, then long-polled (it answers the moment
// the job changes, or after 25 s with 304).
async function select(id) {
  selected = id;
  selectedEtag = "";
  const seq = ++pollSeq;
  document.querySelectorAll("tr.job").forEach((r) => r.classList.toggle("selected", Number(r.dataset.id) === id));
  while (seq === pollSeq) {
    try {
      const res = await api(`/api/v2/jobs/${id}` + (selectedEtag ? "?wait=25" : ""),
                            {headers: selectedEtag ? {"If-None-Match": selectedEtag} : {}});
      if (seq !== pollSeq) return;
      if (res.status === 200) {
        selectedEtag = res.headers.get("ETag") || "";
        await showJob(await res.json());
      } else if (res.status !== 304) {
        await new Promise((r) => setTimeout(r, 2000));
      }
    } catch (e) {
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

async function decide(what, body) {
  const res = await api(`/api/v2/jobs/${selected}/${what}`, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  if (!res.ok) {
    const e = await res.json().catch(() => ({}));
    $("detail-error").textContent = (e.error && e.error.message) || `${what} failed (${res.status})`;
    return;
  }
  await showJob(await res.json());
  refreshJobs();
}
$("approve").addEventListener("click", () => decide("approve", {note: "approved on the status page"}));
$("reject").addEventListener("click", () => {
  const reason = $("reject-reason").value.trim();
  if (!reason) { $("detail-error").textContent = "Give a reason to reject."; return; }
  decide("reject", {reason});
});

async function refresh() {
  try {
    await Promise.all([refreshStatus(), refreshJobs()]);
  } catch (e) {
    $("live").textContent = e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
)HTML";
  return page;
}

} // namespace spool::api
