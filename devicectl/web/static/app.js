// The live page: applies the server's state diffs (SSE) and draws them.
// Plain JS, no build step, nothing fetched from outside this server.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const HEAT_RGBA = [[0, 0, 0, 0], [240, 180, 41, 220], [47, 191, 113, 220], [229, 72, 77, 240]];
const APPEND_KEYS = ["trace", "events"];
const TRACE_WINDOW_S = 30;
const TRAIL_S = 5;
const FAULT_STATES = { FAULT: 1, LINK_LOST: 1 };

let state = {};
let mapReady = false;
// Each zone has one name on the page: the map's label (by zone name and by id).
const labelOf = {};
const labelOfId = {};
let token = sessionStorage.getItem("devicectl-token") || "";

function clock(s) {
  if (s === null || s === undefined) return "—";
  s = Math.max(0, Math.floor(s));
  return String(Math.floor(s / 60)).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0");
}

function mm(um) { return um === null || um === undefined ? "—" : (um / 1000).toFixed(2) + " mm"; }

function el(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function pathOf(points) {
  return "M" + points.map((p) => p[0] + "," + p[1]).join("L") + "Z";
}

function centroid(points) {
  // The polygon's area centroid (the average of its corners drifts toward its detailed side).
  let a = 0, cx = 0, cy = 0;
  for (let i = 0; i < points.length; i++) {
    const [x0, y0] = points[i], [x1, y1] = points[(i + 1) % points.length];
    const c = x0 * y1 - x1 * y0;
    a += c; cx += (x0 + x1) * c; cy += (y0 + y1) * c;
  }
  if (Math.abs(a) < 1e-9) return points[0];
  return [cx / (3 * a), cy / (3 * a)];
}

function wrapWords(label, nLines) {
  // The label's words in nLines lines of about equal length.
  const words = label.split(" ");
  const target = label.length / nLines;
  const lines = [];
  let cur = "";
  for (const w of words) {
    if (cur && (cur + " " + w).length > target && lines.length < nLines - 1) { lines.push(cur); cur = w; }
    else cur = cur ? cur + " " + w : w;
  }
  lines.push(cur);
  return lines;
}

function fits(shape, text) {
  // The caption's box lies inside the zone: its corners and edge midpoints are in the fill.
  const b = text.getBBox();
  const xs = [b.x, b.x + b.width / 2, b.x + b.width], ys = [b.y, b.y + b.height / 2, b.y + b.height];
  for (const x of xs) for (const y of ys) {
    if (!(x === xs[1] && y === ys[1]) && !shape.isPointInFill(new DOMPoint(x, y))) return false;
  }
  return true;
}

function placeCaption(shape, text, z, baseSize) {
  // Wrap and shrink the caption until it sits inside its zone, clear of the border.
  const [cx, cy] = centroid(z.outline_mm);
  const longestWords = "99.9 % of 100 %";  // mapstyle.share_text: 99.9 short of 100
  for (let size = baseSize; size > baseSize / 4; size *= 0.88) {
    for (let n = 1; n <= 3; n++) {
      text.textContent = "";
      text.style.fontSize = size.toFixed(2) + "px";
      const lines = [...wrapWords(z.label, n), longestWords];
      lines.forEach((line, k) => {
        const t = el("tspan", { x: cx, dy: k === 0 ? "0" : "1.15em" }, line);
        if (k === lines.length - 1) t.setAttribute("class", "words");
        text.appendChild(t);
      });
      text.setAttribute("y", cy - (lines.length - 1) * 0.575 * size + 0.35 * size);
      if (fits(shape, text)) { text.dataset.fits = "1"; return; }
    }
  }
  text.dataset.fits = "0";
}

function drawMap(map) {
  const [x0, y0, x1, y1] = map.bounds_mm;
  const pad = 6;
  const size = Math.max(x1 - x0, y1 - y0);
  $("tip").setAttribute("r", (size / 70).toFixed(2));
  $("map").setAttribute("viewBox", [x0 - pad, y0 - pad, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad].join(" "));
  if (map.scalp_mm && map.scalp_mm.length) $("scalp").setAttribute("d", pathOf(map.scalp_mm));
  const g = $("zones-svg"), shade = $("zones-shade");
  g.textContent = ""; shade.textContent = "";
  for (const z of map.zones) {
    labelOf[z.name] = z.label;
    labelOfId[z.zone_id] = z.label;
    shade.appendChild(el("path", { d: pathOf(z.outline_mm), class: "zone-shade", id: "shade-" + z.zone_id }));
    const shape = el("path", { d: pathOf(z.outline_mm), class: "zone", "data-zone-id": z.zone_id, id: "zone-" + z.zone_id });
    g.appendChild(shape);
    const text = el("text", { class: "zone-label", id: "label-" + z.zone_id, "data-zone-id": z.zone_id });
    g.appendChild(text);
    placeCaption(shape, text, z, size / 30);
  }
  mapReady = true;
}

function drawShading(shading) {
  // The zones' colours and words, as the session report's map has them.
  for (const sh of shading || []) {
    const area = $("shade-" + sh.zone_id);
    if (area) { area.style.fill = sh.fill; area.dataset.fill = sh.fill; }
    const words = document.querySelector("#label-" + sh.zone_id + " .words");
    if (words) words.textContent = sh.caption.split("\n")[1] || "";
  }
}

function drawHeat(heat, tracked) {
  // A canvas in the SVG (no data: URL, so the page's CSP stays default-src 'self').
  const box = $("heat");
  const canvas = $("heat-canvas");
  $("coverage-note").classList.toggle("hidden", tracked !== false);
  if (!heat) {
    box.setAttribute("width", "0"); box.setAttribute("height", "0");
    box.setAttribute("data-treated", "0"); return;
  }
  canvas.width = heat.nx; canvas.height = heat.ny;
  const ctx = canvas.getContext("2d");
  const data = ctx.createImageData(heat.nx, heat.ny);
  let treated = 0;
  for (let i = 0; i < heat.cells.length; i++) {
    const v = heat.cells.charCodeAt(i) - 48;
    if (v > 0) treated++;
    data.data.set(HEAT_RGBA[v] || HEAT_RGBA[0], i * 4);
  }
  ctx.putImageData(data, 0, 0);
  box.setAttribute("x", heat.x0_mm); box.setAttribute("y", heat.y0_mm);
  box.setAttribute("width", heat.nx * heat.cell_mm); box.setAttribute("height", heat.ny * heat.cell_mm);
  box.setAttribute("data-treated", String(treated));
}

function drawZones(zones) {
  const list = $("zone-list");
  list.textContent = "";
  for (const z of zones || []) {
    const pct = Math.round(100 * z.fraction);
    const li = document.createElement("li");
    li.dataset.zoneId = z.zone_id;
    li.className = (z.active ? "active " : "") + (z.done ? "done" : "");
    li.innerHTML = '<div class="zone-head"><span class="name"></span><span class="pct"></span></div>' +
      '<div class="bar"><div class="fill"></div><div class="goal"></div></div>';
    li.querySelector(".name").textContent = (labelOf[z.name] || z.name) + " · " + mm(z.depth_um) + " · " + (z.rate_dhz / 10).toFixed(0) + " Hz" + (z.done ? " ✓" : "");
    // One legend everywhere (devicectl/dose.py): dose in passes, at target, at maximum,
    // as the server words them (dose.dose_cells); the page does not round them itself.
    const [dose, atTarget, atMax] = z.dose_text;
    li.querySelector(".pct").textContent = dose + " · at target " + atTarget + " · at maximum " + atMax;
    li.querySelector(".pct").dataset.fraction = String(z.fraction);
    const byDose = z.target_passes ? Math.round(100 * (z.mean_passes || 0) / z.target_passes) : pct;
    li.querySelector(".fill").style.width = Math.min(100, byDose) + "%";
    li.querySelector(".goal").style.left = (z.target_passes ? 100 : Math.round(100 * z.target_fraction)) + "%";
    list.appendChild(li);
    const shape = $("zone-" + z.zone_id);
    if (shape) shape.classList.toggle("active", !!z.active);
  }
}

function drawTrace(trace, capUm, limitUm) {
  const pts = trace || [];
  const tEnd = pts.length ? pts[pts.length - 1][0] : 0;
  limitUm = limitUm || capUm;
  const top = limitUm * 1.2;
  const X = (t) => (300 * (1 - (tEnd - t) / TRACE_WINDOW_S)).toFixed(1);
  const Y = (um) => (120 - 120 * Math.min(um, top) / top).toFixed(1);
  // The cap (commanded) and the tolerance above it (measured), drawn and named in the legend.
  $("cap-line").setAttribute("y1", Y(capUm)); $("cap-line").setAttribute("y2", Y(capUm));
  $("limit-line").setAttribute("y1", Y(limitUm)); $("limit-line").setAttribute("y2", Y(limitUm));
  $("tol-band").setAttribute("y", Y(limitUm));
  $("tol-band").setAttribute("height", (Number(Y(capUm)) - Number(Y(limitUm))).toFixed(1));
  $("cap-mm").textContent = (capUm / 1000).toFixed(2);
  $("cap-legend").textContent = (capUm / 1000).toFixed(2);
  $("limit-legend").textContent = (limitUm / 1000).toFixed(2);
  const recent = pts.filter((p) => p[0] >= tEnd - TRACE_WINDOW_S);
  $("depth-cmd").setAttribute("points", recent.filter((p) => p[1] !== null).map((p) => X(p[0]) + "," + Y(p[1])).join(" "));
  $("depth-meas").setAttribute("points", recent.filter((p) => p[2] !== null).map((p) => X(p[0]) + "," + Y(p[2])).join(" "));
  const trail = pts.filter((p) => p[0] >= tEnd - TRAIL_S && p[3] !== null && p[4] !== null);
  $("trail").setAttribute("points", trail.map((p) => p[3] + "," + p[4]).join(" "));
}

function known(v) { return v !== null && v !== undefined; }

function drawPen(pen) {
  const tip = $("tip");
  pen = pen || {};
  if (known(pen.x_mm) && known(pen.y_mm)) {
    tip.setAttribute("cx", pen.x_mm); tip.setAttribute("cy", pen.y_mm); tip.classList.remove("hidden");
  } else tip.classList.add("hidden");
  const cap = state.depth_cap_um, limit = state.depth_limit_um;
  const inBand = known(pen.depth_meas_um) && cap && limit && pen.depth_meas_um > cap && pen.depth_meas_um <= limit;
  $("depth-now").textContent = known(pen.depth_meas_um) || known(pen.depth_cmd_um)
    ? mm(pen.depth_meas_um) + " measured · " + mm(pen.depth_cmd_um) + " commanded" +
      (inBand ? " (within the " + ((limit - cap) / 1000).toFixed(2) + " mm tolerance)" : "") : "—";
  $("rate").textContent = known(pen.rate_meas_dhz) ? (pen.rate_meas_dhz / 10).toFixed(1) + " Hz" : "—";
  $("strokes").textContent = known(pen.stamp_count) ? String(pen.stamp_count) : "—";
  $("contact").textContent = known(pen.contact) ? (pen.contact ? "on the scalp" : "lifted") : "—";
  $("battery").textContent = known(pen.battery_mv) ? (pen.battery_mv / 1000).toFixed(2) + " V" : "—";
}

function eventItem(e) {
  const li = document.createElement("li");
  if (e[5]) li.className = "safety";
  li.dataset.kind = e[2];
  const t = document.createElement("span"); t.className = "t"; t.textContent = clock(e[1]);
  li.appendChild(t);
  const zone = e[4] === null ? "" : " " + (labelOfId[e[4]] || "zone " + e[4]);
  li.appendChild(document.createTextNode(e[2] + zone + ": " + e[3]));
  return li;
}

function drawEvents(events) {
  const ol = $("events");
  ol.textContent = "";
  for (const e of (events || []).slice(-60).reverse()) ol.appendChild(eventItem(e));
}

function drawPinned(pinned) {
  // Faults and emergency stops stay here, above the timeline, for the whole session.
  const ol = $("pinned");
  ol.textContent = "";
  for (const e of (pinned || []).slice().reverse()) ol.appendChild(eventItem(e));
}

function drawState(s, changed) {
  const has = (k) => changed === null || k in changed || (k + "+") in changed;
  if (has("header") && s.header) {
    const h = s.header;
    $("header-text").textContent = "session " + h.session_id + " · patient " + h.patient_ref + " · " + h.profile;
  }
  if (has("header") || has("actions") || has("over")) updateControls();
  if (has("state") || has("fault") || has("stop_reason") || has("records_failure") || has("over")) {
    const st = $("state"); st.textContent = (s.state || "—").replace("_", " "); st.className = "state " + s.state;
    const banner = $("fault-banner");
    if (s.records_failure) {
      banner.textContent = "RECORDS — stamping stopped: " + s.records_failure;
      banner.classList.remove("hidden");
    } else if (FAULT_STATES[s.state] && !s.over) {
      banner.textContent = (s.state === "FAULT" ? "FAULT — the pen is stopped: " : "LINK LOST — the pen stops by itself: ") + (s.fault || s.stop_reason || "see the events");
      banner.classList.remove("hidden");
    } else if (s.over && (s.fault || FAULT_STATES[s.state])) {
      banner.textContent = "Ended after a " + (s.state === "LINK_LOST" ? "lost link" : "fault") + ": " + (s.fault || s.stop_reason || "see the events");
      banner.classList.remove("hidden");
    } else banner.classList.add("hidden");
    if (s.over) {
      const records = s.header && s.header.mode === "records";
      setConn("session ended" + (records ? ": this page shows its record" : ""), false);
    }
  }
  if (has("elapsed_s")) $("elapsed").textContent = clock(s.elapsed_s);
  if (has("remaining_s_est")) $("remaining").textContent = clock(s.remaining_s_est);
  if (has("heat") || has("tracked")) drawHeat(s.heat, s.tracked);
  if (has("zones")) drawZones(s.zones);
  if (has("shading")) drawShading(s.shading);
  if (has("pen")) drawPen(s.pen);
  if (has("trace") || has("depth_cap_um") || has("depth_limit_um")) drawTrace(s.trace, s.depth_cap_um, s.depth_limit_um);
  if (has("events")) drawEvents(s.events);
  if (has("pinned")) drawPinned(s.pinned);
  if (has("hidden_events")) {
    $("hidden-events").textContent = s.hidden_events
      ? s.hidden_events + " routine events (commands sent, holds and resumes, contact, samples) not listed; all are in the records"
      : "";
  }
  if (has("records_error")) {
    $("records-error").textContent = s.records_error || "";
    $("records-error").classList.toggle("hidden", !s.records_error);
  }
}

function apply(delta) {
  for (const [k, v] of Object.entries(delta)) {
    if (k.endsWith("+") && APPEND_KEYS.includes(k.slice(0, -1))) {
      const key = k.slice(0, -1);
      state[key] = (state[key] || []).concat(v);
    } else state[k] = v;
  }
  // Keep the appended lists bounded, as the server does.
  if (state.trace && state.trace.length) {
    const tEnd = state.trace[state.trace.length - 1][0];
    state.trace = state.trace.filter((p) => p[0] >= tEnd - TRACE_WINDOW_S);
  }
  if (state.events && state.events.length > 60) state.events = state.events.slice(-60);
}

function setConn(text, lost) {
  const c = $("conn"); c.textContent = text; c.classList.toggle("lost", !!lost);
}

let wasLost = false;

function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("full", (ev) => {
    const msg = JSON.parse(ev.data);
    if (!mapReady) drawMap(msg.map);
    state = msg.state;
    drawState(state, null);
    if (!state.over) setConn(wasLost ? "reconnected" : "live", false);
    wasLost = false;
  });
  es.addEventListener("end", (ev) => {
    state = JSON.parse(ev.data).state;
    drawState(state, null);
    es.close();
    setConn("session over: this page no longer updates", false);
    updateControls();
  });
  es.onmessage = (ev) => {
    const delta = JSON.parse(ev.data);
    apply(delta);
    drawState(state, delta);
  };
  es.onerror = () => {
    wasLost = true;
    setConn("connection lost — reconnecting…", true);
    // The browser retries by itself unless the server answered with an error.
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
  };
}

const TOKEN_RE = /^[A-Za-z0-9_-]{8,128}$/;

function updateControls() {
  // A button is enabled only with the token, and only in a state where it can act.
  const controls = !!(state.header && state.header.controls);
  const allowed = !!token && controls;
  // A page without controls (devicectl monitor, an ended session) asks for no token.
  const asks = controls && !state.over;
  $("token-form").classList.toggle("hidden", !asks);
  $("readonly-text").textContent = asks
    ? "Read-only. Enter the session token printed in the terminal to control the pen."
    : (state.over ? "Read-only: the session has ended." : "Read-only: this page shows the session's records; it has no controls.");
  const actions = state.actions || [];
  for (const b of document.querySelectorAll(".buttons button")) {
    b.disabled = !allowed || !actions.includes(b.dataset.action);
  }
  $("readonly-note").classList.toggle("hidden", allowed && !state.over);
  $("controls-note").textContent = allowed && !actions.length ? "No control applies in this state." : "";
}

function useToken(value) {
  if (!TOKEN_RE.test(value)) {
    $("token-error").textContent = "That is not a session token: copy it from the terminal.";
    return false;
  }
  $("token-error").textContent = "";
  token = value;
  sessionStorage.setItem("devicectl-token", token);
  updateControls();
  return true;
}

async function send(action) {
  const res = await fetch("/api/control/" + action, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Session-Token": token },
    body: JSON.stringify({ confirm: true }),
  });
  const body = await res.json().catch(() => ({}));
  $("control-result").textContent = res.ok ? action.replace("_", " ") + " sent" : "refused (" + res.status + "): " + (body.error || "");
  if (res.status === 403) { token = ""; sessionStorage.removeItem("devicectl-token"); updateControls(); }
}

function confirmThen(text, then) {
  const dlg = $("confirm-dialog");
  $("confirm-text").textContent = text;
  dlg.returnValue = "";
  dlg.onclose = () => { if (dlg.returnValue === "ok") then(); };
  dlg.showModal();
}

function init() {
  // The token travels only in the fragment (#token=…), which the browser never
  // sends to a server; it moves into the tab's session storage and leaves the
  // address bar. A token in the query (?token=) would have reached the server:
  // it is not used, only removed from the address bar.
  const frag = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (frag) {
    let value = "";
    try { value = decodeURIComponent(frag[1]); } catch (e) { value = ""; }
    useToken(value);
  }
  if (frag || new URLSearchParams(location.search).has("token")) {
    history.replaceState(null, "", location.pathname);
  }
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    useToken($("token-input").value.trim());
  });
  for (const b of document.querySelectorAll(".buttons button")) {
    b.addEventListener("click", () => {
      const action = b.dataset.action;
      if (b.dataset.confirm) confirmThen(b.dataset.confirm, () => send(action));
      else send(action);
    });
  }
  updateControls();
  connect();
}

init();
