"use strict";
// The gateway's status page: live updates over server-sent events (/api/live), polling
// /api/status when the stream is refused or drops. Every value goes into the page as text
// (textContent), never as markup. Times are shown relative to the gateway's clock (the
// view's now_ms), so a phone with a wrong clock still reads "12 s ago" correctly.
(function () {
  const POLL_MS = 2000;
  const STALE_MS = 6000;
  const RETRY_LIVE_MS = 30000;
  const $ = (id) => document.getElementById(id);
  let lastUpdate = 0;
  let source = null;
  let pollTimer = null;
  let mode = "connecting";

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "cls") node.className = v;
      else if (k.startsWith("data-") || k === "title") node.setAttribute(k, v);
    }
    for (const c of children || []) node.appendChild(c);
    return node;
  }

  function cell(label, text, cls, title) {
    const td = el("td", { "data-label": label, text: text === null || text === undefined ? "–" : String(text) });
    if (cls) td.className = cls;
    if (title) td.title = title;
    return td;
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "–";
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function ago(t, now) {
    return t === null || t === undefined ? "–" : duration(now - t) + " ago";
  }

  function clock(t) {
    return t === null || t === undefined ? "" : new Date(t).toLocaleString();
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function fill(tableId, rows, emptyId) {
    const body = $(tableId).querySelector("tbody");
    body.replaceChildren(...rows);
    if (emptyId) $(emptyId).hidden = rows.length > 0;
    $(tableId).hidden = rows.length === 0 && !!emptyId;
  }

  function card(id, state, text) {
    $("card-" + id).setAttribute("data-state", state);
    $(id).textContent = text;
  }

  function renderHealth(v) {
    const h = v.health;
    card("uplink", h.uplink.up ? "ok" : "bad", h.uplink.up ? "connected" : "down");
    $("inflight").textContent = h.uplink.inflight_batches + " batch(es) awaiting central's ack";
    card("local", h.local_broker.up ? "ok" : "bad", h.local_broker.up ? "connected" : "down");
    const oldest = h.buffer.oldest_undelivered_ms;
    card("oldest", oldest >= 60000 ? "bad" : oldest >= 5000 ? "warn" : "ok", oldest ? duration(oldest) : "none");
    const d = h.disk;
    if (d.error) {
      card("disk", "bad", "unreadable");
      $("disk-detail").textContent = d.error;
    } else {
      const frac = d.total_bytes ? d.free_bytes / d.total_bytes : 0;
      card("disk", frac < 0.05 ? "bad" : frac < 0.15 ? "warn" : "ok", bytes(d.free_bytes));
      $("disk-detail").textContent = "of " + bytes(d.total_bytes) + "; buffer " + bytes(d.buffer_bytes);
    }
    fill("lanes", h.buffer.lanes.map((l) => el("tr", { "data-lane": l.lane }, [
      cell("Lane", l.lane + (l.lane === "P0" ? " alarms" : l.lane === "P1" ? " state" : " telemetry")),
      cell("Waiting", l.events, "num"),
      cell("Bytes", bytes(l.bytes), "num"),
      cell("Evicted", l.evicted, "num"),
    ])));
  }

  function receipts(e) {
    const names = ["stored at the gateway", "delivered to central", "acknowledged by a dispatcher"];
    const times = [e.stored_ms, e.delivered_ms, e.acked_ms];
    const td = el("td", { "data-label": "Receipts", cls: "receipts" });
    for (let i = 0; i < 3; i++) {
      const on = times[i] !== null && times[i] !== undefined;
      td.appendChild(el("span", {
        cls: "pill" + (on ? " on" : ""),
        text: String(i + 1),
        title: names[i] + (on ? " at " + clock(times[i]) : ": not yet"),
        "data-receipt": String(i + 1),
      }));
    }
    if (e.dropped) td.appendChild(el("span", { cls: "badge bad", text: "dropped" }));
    return td;
  }

  function renderEvents(v) {
    fill("events", v.events.map((e) => el("tr", {
      cls: "p" + e.priority, "data-ref": e.ref, "data-receipt": String(e.receipt),
    }, [
      cell("Time", ago(e.received_ms, v.gateway.now_ms), null, clock(e.received_ms)),
      cell("Event", e.type_name + " (P" + e.priority + ")"),
      cell("Device", e.ref),
      cell("Zone", e.zone),
      receipts(e),
      cell("Latency", e.latency_ms === null ? "–" : e.latency_ms + " ms", "num"),
    ])), "events-empty");
  }

  function stateBadge(state) {
    const cls = { online: "ok", worn: "ok", offline: "bad", "strap open": "warn", "not worn": "warn" }[state] || "";
    return el("td", { "data-label": "State" }, [el("span", { cls: "badge " + cls, text: state })]);
  }

  function renderDevices(v) {
    const now = v.gateway.now_ms;
    fill("devices", v.devices.map((d) => el("tr", { "data-device": d.id, "data-state": d.state }, [
      cell("Device", d.id),
      cell("Kind", d.kind.replace("_", " ")),
      cell("Zone", d.zone),
      stateBadge(d.offline_since_ms ? "offline" : d.state),
      cell("Last heard", ago(d.last_heard_ms, now), null,
        d.offline_since_ms ? "offline since " + clock(d.offline_since_ms) : clock(d.last_heard_ms)),
      cell("Battery", d.battery === null ? null : d.battery + " %", "num"),
      cell("RSSI", d.rssi === null ? null : d.rssi + " dBm" + (d.scanner ? " (" + d.scanner + ")" : ""), "num"),
      cell("Firmware", d.firmware, null, d.firmware ? "" : "not reported by the device"),
    ])), "devices-empty");
  }

  function renderScanners(v) {
    fill("scanners", v.scanners.map((s) => el("tr", { "data-scanner": s.name }, [
      cell("Scanner", s.name),
      cell("Backend", s.backend),
      el("td", { "data-label": "State" }, [el("span", {
        cls: "badge " + (s.blind ? "bad" : s.running ? "ok" : "warn"),
        text: s.blind ? "blind (restarts " + s.restarts + ")" : s.running ? "scanning" : "starting",
      })]),
      cell("Last advert", duration(s.silent_s * 1000) + " ago"),
    ])), "scanners-empty");
  }

  function renderRejects(v) {
    fill("rejects", v.rejects.map((r) => el("tr", { "data-reason": r.source + ":" + r.reason }, [
      cell("From", r.source),
      cell("Reason", r.reason),
      cell("Last hour", r.last_hour, "num"),
      cell("Since start", r.total, "num"),
    ])), "rejects-empty");
  }

  function renderCounters(v) {
    const labels = {
      frames_accepted: "frames accepted", events_committed: "events stored", events_delivered: "events delivered",
      batches_sealed: "batches signed", batches_acked: "batches acknowledged", receipts_sent: "receipts sent",
      receipts_dropped: "receipts dropped", adverts_accepted: "adverts accepted", band_events: "wristband alerts",
    };
    $("counters").replaceChildren(...Object.entries(v.counters).map(([k, n]) => el("div", { "data-counter": k }, [
      el("dt", { text: labels[k] || k }), el("dd", { text: String(n) }),
    ])));
  }

  function render(v) {
    $("gateway").textContent = v.gateway.id;
    document.title = v.gateway.id + " status";
    $("venue").textContent = v.gateway.venue;
    $("uptime").textContent = duration(v.gateway.uptime_s * 1000);
    $("problems").replaceChildren(...v.problems.map((p) => el("li", { text: p })));
    $("attention").hidden = v.problems.length === 0;
    $("all-well").hidden = v.problems.length !== 0;
    renderHealth(v);
    renderEvents(v);
    renderDevices(v);
    renderScanners(v);
    renderRejects(v);
    renderCounters(v);
    lastUpdate = Date.now();
    $("updated").textContent = new Date(lastUpdate).toLocaleTimeString();
    document.body.setAttribute("data-now", String(v.gateway.now_ms));
  }

  function setMode(m) {
    mode = m;
    const text = { live: "live", polling: "updating every 2 s", stale: "no updates", connecting: "connecting…" };
    $("conn").setAttribute("data-mode", m);
    $("conn").textContent = text[m] || m;
  }

  function poll() {
    clearTimeout(pollTimer);
    fetch("/api/status", { credentials: "same-origin", cache: "no-store" })
      .then((r) => {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.json() : null;
      })
      .then((v) => { if (v) { render(v); if (!source) setMode("polling"); } })
      .catch(() => {})
      .finally(() => { if (!source) pollTimer = setTimeout(poll, POLL_MS); });
  }

  function live() {
    if (!window.EventSource) { poll(); return; }
    source = new EventSource("/api/live");
    source.onmessage = (msg) => { render(JSON.parse(msg.data)); setMode("live"); };
    source.onerror = () => {
      // refused (too many live views, logged out) or the gateway restarted: poll, try again later
      source.close();
      source = null;
      poll();
      setTimeout(() => { if (!source) { clearTimeout(pollTimer); live(); } }, RETRY_LIVE_MS);
    };
  }

  setInterval(() => {
    if (lastUpdate && Date.now() - lastUpdate > STALE_MS && mode !== "stale") setMode("stale");
  }, 1000);
  poll();
  live();
})();
