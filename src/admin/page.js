// The status page's refresh: every 2 s, GET /status (with the token the
// page was opened with, ?token=, as a Bearer header) and render the same
// markup as src/admin/page.rs from the JSON. Keep the two in step.
"use strict";
(function () {
  const EVERY_MS = 2000;
  const token = new URLSearchParams(location.search).get("token");
  const live = document.getElementById("live");
  const main = document.getElementById("report");

  function esc(v) {
    return String(v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }
  function list(items, empty) { return items && items.length ? items.join(", ") : empty; }
  function perSec(r) { return r.toFixed(1) + "/s"; }
  function ratio(r) { return r === null || r === undefined ? "-" : (r * 100).toFixed(1) + " %"; }
  function bytes(n) {
    if (n < 1024) return n + " B";
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let v = n / 1024, u = 0;
    while (v >= 1024 && u + 1 < units.length) { v /= 1024; u++; }
    return v.toFixed(1) + " " + units[u];
  }
  function duration(secs) {
    const s = Math.floor(Math.max(0, secs));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function ago(nowMs, thenMs) { return duration(Math.max(0, nowMs - thenMs) / 1000) + " ago"; }
  function timestamp(ms) { return new Date(Math.floor(ms / 1000) * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC"; }

  function overview(r) {
    let o = '<section id="overview"><h2>Overview</h2><dl class="cards">' +
      '<div><dt>Generation</dt><dd id="generation">' + esc(r.generation) + "</dd></div>" +
      '<div><dt>Requests (last minute)</dt><dd id="rate">' + esc(perSec(r.rates.requests_per_sec)) + "</dd></div>" +
      '<div><dt>5xx share</dt><dd id="errors">' + esc(ratio(r.rates.error_ratio)) + "</dd></div>" +
      "<div><dt>Uptime</dt><dd>" + esc(duration(r.uptime_secs)) + "</dd></div>" +
      "<div><dt>Threads</dt><dd>" + esc(r.threads) + "</dd></div>" +
      "<div><dt>Version</dt><dd>" + esc(r.version) + "</dd></div>" +
      '<div><dt>Pid</dt><dd id="pid">' + esc(r.pid) + "</dd></div></dl>";
    o += '<p id="reload">Last reload: ';
    const last = r.reload.last;
    if (!last) {
      o += "none";
    } else {
      o += '<span class="' + (last.ok ? "st-up" : "st-down") + '">' + (last.ok ? "ok" : "failed") + "</span> (" +
        esc(last.trigger) + ") at " + esc(timestamp(last.at * 1000)) + " (" + esc(ago(r.time_unix_ms, last.at * 1000)) +
        "), generation " + esc(last.generation) + "; " + esc(r.reload.reloads) + " ok, " + esc(r.reload.failures) +
        " failed since start";
      if (last.error) o += '<pre class="error">' + esc(last.error) + "</pre>";
    }
    o += "</p>";
    const up = r.upgrade.last;
    if (up) {
      o += '<p id="upgrade">Last binary upgrade: <span class="' + (up.ok ? "st-up" : "st-down") + '">' +
        (up.ok ? "handed over" : "failed") + "</span> at " + esc(timestamp(up.at * 1000)) + " (" +
        esc(ago(r.time_unix_ms, up.at * 1000)) + ")";
      if (up.error) o += '<pre class="error">' + esc(up.error) + "</pre>";
      o += "</p>";
    }
    o += '<p class="muted">Listeners: ' + esc(list(r.listeners.map((l) => l.scheme + "://" + l.addr), "none")) +
      ". Files: " + esc(list(r.files, "none")) + ".</p></section>";
    return o;
  }

  function upstreamLine(up) {
    let checks = "passive health only";
    const c = up.health;
    if (c) {
      checks = c.type + " checks" + (c.path !== null ? " of " + c.path : "") + " every " + c.interval_ms + " ms (timeout " +
        c.timeout_ms + " ms, out after " + c.fails + " fails, back after " + c.passes + " passes)";
    }
    return up.balance + ", " + up.protocol + ", " + checks;
  }

  function peerRow(upstream, p, nowMs) {
    const state = p.reason ? p.state + " (" + p.reason + ")" : p.state;
    const retry = p.retry_in_ms !== null ? ", retried in " + p.retry_in_ms + " ms" : "";
    let check = "-", last = "-";
    if (p.check) {
      check = p.check.state + ", " + p.check.fails + " fails, " + p.check.passes + " passes in a row";
      if (p.check.error) check += ": " + p.check.error;
      last = ago(nowMs, p.check.last_check_unix_ms);
    }
    const name = p.name === p.addr ? p.addr : p.name + " (" + p.addr + ")";
    return '<tr class="peer" data-upstream="' + esc(upstream) + '" data-peer="' + esc(p.addr) + '"><td>' + esc(name) +
      (p.backup ? " <em>backup</em>" : "") + '</td><td class="state st-' + esc(p.state) + '">' + esc(state) + "</td><td>" +
      esc(p.fails) + esc(retry) + '</td><td class="check">' + esc(check) + "</td><td>" + esc(last) + "</td><td>" +
      esc(p.active) + "</td><td>" + esc(p.weight) + "</td></tr>";
  }

  function upstreams(r) {
    let o = '<section id="upstreams"><h2>Upstreams</h2>';
    const names = Object.keys(r.upstreams);
    if (!names.length) o += '<p class="muted">none</p>';
    for (const name of names) {
      const up = r.upstreams[name];
      o += "<h3>" + esc(name) + '</h3><p class="muted">' + esc(upstreamLine(up)) + "</p><table><thead><tr><th>peer</th>" +
        "<th>state</th><th>passive fails</th><th>active check</th><th>last check</th><th>in flight</th><th>weight</th>" +
        "</tr></thead><tbody>";
      for (const p of up.peers) o += peerRow(name, p, r.time_unix_ms);
      o += "</tbody></table>";
    }
    return o + "</section>";
  }

  function routes(r) {
    let o = '<section id="routes"><h2>Routes</h2><table><thead><tr><th>name</th><th>match</th><th>to</th>' +
      "<th>policies</th><th>limits</th><th>cache</th><th>requests/s</th><th>5xx</th></tr></thead><tbody>";
    for (const s of r.routes) {
      let to = s.target + " " + s.to;
      if (s.rewrite) to += " (rewrite " + s.rewrite + ")";
      const policies = s.policies.concat(s.lua.map((phase) => "lua." + phase));
      o += '<tr class="route"><td>' + esc(s.name) + "</td><td>" + esc(list(s.hosts, "*")) + " " +
        esc(s.methods ? s.methods.join(" ") : "any") + " " + esc(s.path_kind) + " " + esc(s.path) + "</td><td>" +
        esc(to.trimEnd()) + "</td><td>" + esc(list(policies, "-")) + "</td><td>" + esc(list(s.limits, "-")) + "</td><td>" +
        esc(s.cache || "-") + "</td><td>" + esc(perSec(s.rate.requests_per_sec)) + "</td><td>" + esc(ratio(s.rate.error_ratio)) +
        "</td></tr>";
    }
    return o + "</tbody></table></section>";
  }

  function workers(r) {
    const names = Object.keys(r.workers);
    if (!names.length) return "";
    let o = '<section id="workers"><h2>Managed workers</h2>';
    for (const name of names) {
      const pool = r.workers[name];
      o += "<h3>" + esc(name) + ' <span class="st-' + esc(pool.state) + '">' + esc(pool.state) + '</span></h3><p class="muted">' +
        esc(pool.count) + " &times; " + esc(pool.command.join(" ")) + "; generation " + esc(pool.generation) + "; " +
        esc(pool.restarts) + " restarts</p>";
      if (pool.last_error) o += '<pre class="error">' + esc(pool.last_error) + "</pre>";
      o += "<table><thead><tr><th>#</th><th>pid</th><th>state</th><th>generation</th><th>uptime</th><th>requests</th>" +
        "<th>restarts</th><th>address</th></tr></thead><tbody>";
      for (const w of pool.workers) {
        o += "<tr><td>" + esc(w.id) + "</td><td>" + esc(w.pid) + '</td><td class="st-' + esc(w.state) + '">' + esc(w.state) +
          "</td><td>" + esc(w.generation) + "</td><td>" + esc(duration(w.uptime_secs)) + "</td><td>" + esc(w.requests) +
          "</td><td>" + esc(w.restarts) + "</td><td>" + esc(w.addr) + "</td></tr>";
      }
      o += "</tbody></table>";
    }
    return o + "</section>";
  }

  function caches(r) {
    const names = Object.keys(r.caches);
    if (!names.length) return "";
    let o = '<section id="caches"><h2>Cache zones</h2><table><thead><tr><th>zone</th><th>memory</th><th>disk</th>' +
      "<th>hit ratio</th><th>lookups</th><th>stores</th></tr></thead><tbody>";
    for (const name of names) {
      const z = r.caches[name], l = z.lookups, d = z.disk;
      const disk = d ? d.entries + " entries, " + bytes(d.bytes) + " of " + bytes(d.max_bytes) : "-";
      o += "<tr><td>" + esc(name) + "</td><td>" + esc(z.memory.entries) + " entries, " + esc(bytes(z.memory.bytes)) + " of " +
        esc(bytes(z.memory.max_bytes)) + "</td><td>" + esc(disk) + "</td><td>" + esc(ratio(z.hit_ratio)) + "</td><td>" +
        esc(l.hit + " hit, " + l.miss + " miss, " + l.expired + " expired, " + l.stale + " stale, " + l.updating +
          " updating, " + l.revalidated + " revalidated, " + l.bypass + " bypass") + "</td><td>" + esc(z.stores) + "</td></tr>";
    }
    return o + "</tbody></table></section>";
  }

  function limits(r) {
    const names = Object.keys(r.limits);
    if (!names.length) return "";
    let o = '<section id="limits"><h2>Limit zones</h2><table><thead><tr><th>zone</th><th>limit</th><th>key</th>' +
      "<th>scope</th><th>redis</th></tr></thead><tbody>";
    for (const name of names) {
      const z = r.limits[name];
      let redis = "-";
      if (z.redis) {
        redis = z.redis.state + ", " + z.redis.fallbacks + " fallbacks (on error: " + (z.on_redis_error || "-") + ")";
        if (z.redis.last_error) redis += "; last error: " + z.redis.last_error;
      }
      o += "<tr><td>" + esc(name) + "</td><td>" + esc(z.kind) + " " + esc(z.limit) + "</td><td>" + esc(z.key) + "</td><td>" +
        esc(z.scope) + "</td><td>" + esc(redis) + "</td></tr>";
    }
    return o + "</tbody></table></section>";
  }

  function render(r) {
    return overview(r) + upstreams(r) + routes(r) + workers(r) + caches(r) + limits(r);
  }

  async function refresh() {
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      // Relative: the page may sit behind a proxy under a path of its own.
      const resp = await fetch("status", { headers: headers, cache: "no-store" });
      if (!resp.ok) throw new Error("GET /status answered " + resp.status + (resp.status === 401 ? " (open the page with ?token=...)" : ""));
      main.innerHTML = render(await resp.json());
      live.className = "muted";
      live.textContent = "live: updated " + new Date().toLocaleTimeString() + ", every 2 s";
    } catch (e) {
      live.className = "error";
      live.textContent = "refresh failed: " + e.message + "; showing the last figures";
    }
    setTimeout(refresh, EVERY_MS);
  }
  live.textContent = "live: refreshing every 2 s";
  setTimeout(refresh, EVERY_MS);
})();
