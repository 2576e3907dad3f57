// The planner's page. Plain JavaScript, no libraries, nothing loaded from outside this server.
//
// It talks to the same API as every app: GET /v1/location/cities for the city list,
// GET /v1/location/map for the map's layers, POST /v1/location/recommend for the picks, each with
// the key the planner entered (sessionStorage: gone when the tab closes).
"use strict";

const KEY_STORE = "quanyu.apiKey";
const RETRY_SECONDS = 3;
const SVG = "http://www.w3.org/2000/svg";
// light to dark: score classes of the candidate cells (colour-blind safe sequential ramp)
const RAMP = ["#f7fcb9", "#d9f0a3", "#addd8e", "#78c679", "#31a354", "#006837"];

const $ = (id) => document.getElementById(id);
const state = {cities: [], currency: "CNY", map: null, answer: null, request: null, selected: null, view: null, retry: null};

const api = (path) => new URL(path, document.baseURI).toString();

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(path, options = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  let response;
  try {
    response = await fetch(api(path), {
      ...options,
      headers: {"Authorization": `Bearer ${key}`, "Content-Type": "application/json", ...(options.headers || {})},
    });
  } catch (err) {
    throw new ApiError(0, "The Quanyu server cannot be reached. Check that it is running (quanyu serve), then try again.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, describe(response.status, body));
  }
  return body;
}

function describe(status, body) {
  const detail = body && body.detail;
  if (status === 401) return "The API key was refused. Enter it again.";
  if (status === 503) {
    return "The server is still loading the location model" +
      (typeof detail === "string" ? ` (${detail})` : "") + `. Trying again every ${RETRY_SECONDS} s…`;
  }
  if (status === 404 && typeof detail === "string" && detail.startsWith("unknown city")) {
    return capitalise(detail.replace("; cities", ". Cities")) + ".";  // Unknown city 'X'. Cities with …: A, B.
  }
  if (status === 422 && Array.isArray(detail)) {
    return "Check the form: " + detail.map((e) => `${(e.loc || []).slice(1).join(".") || "request"}: ${e.msg}`).join("; ");
  }
  if (typeof detail === "string") {  // the API's wording, with the form's names for its fields
    return capitalise(detail.replace(/min_distance_km/g, "the minimum distance").replace(/max_rent/g, "the maximum rent")) + ".";
  }
  return `The server answered ${status}. Try again; if it persists, the server log has the details.`;
}

const capitalise = (s) => s.charAt(0).toUpperCase() + s.slice(1);

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

function busy(on) {
  $("busy").hidden = !on;
  $("submit").disabled = on;
}

// --- key --------------------------------------------------------------------------------------

function askForKey(message) {
  sessionStorage.removeItem(KEY_STORE);
  $("key-panel").hidden = false;
  $("ask").hidden = true;
  if (message) showMessage(message);
  $("api-key").focus();
}

async function start() {
  if (!sessionStorage.getItem(KEY_STORE)) {
    askForKey();
    return;
  }
  $("key-panel").hidden = true;
  $("ask").hidden = false;
  await loadCities();
}

function withRetry(task) {
  clearTimeout(state.retry);
  return task().catch((err) => {
    if (err.status === 401) return askForKey(err.message);
    showMessage(err.message, err.status === 503 || err.status === 0 ? "waiting" : "error");
    if (err.status === 503 || err.status === 0) state.retry = setTimeout(() => withRetry(task), RETRY_SECONDS * 1000);
  });
}

function loadCities() {
  return withRetry(async () => {
    const answer = await call("v1/location/cities");
    state.cities = answer.cities;
    showCurrency(answer.currency || state.currency);
    const list = $("city-list");
    list.replaceChildren(...answer.cities.map((c) => {
      const option = document.createElement("option");
      option.value = c.city;
      option.label = `${c.candidates} candidate sites, ${c.stores} stores`;
      return option;
    }));
    if (!$("city").value && answer.cities.length) $("city").value = answer.cities[0].city;
    showMessage("");
  });
}

// --- the request ------------------------------------------------------------------------------

function readForm() {
  const request = {city: $("city").value.trim(), k: Number($("k").value), objective: "net_gain"};
  const checked = document.querySelector('input[name="objective"]:checked');
  if (checked) request.objective = checked.value;
  const distance = $("min-distance").value;
  if (distance !== "") request.min_distance_km = Number(distance);
  const rent = $("max-rent").value;
  if (rent !== "") request.max_rent = Number(rent);
  return request;
}

function checkForm(request) {
  if (!request.city) return "Choose a city.";
  if (!Number.isInteger(request.k) || request.k < 1 || request.k > 50) return "Stores to open: a whole number from 1 to 50.";
  if ("min_distance_km" in request && !(request.min_distance_km >= 0 && request.min_distance_km <= 100)) {
    return "Minimum distance: a number of kilometres from 0 to 100.";
  }
  if ("max_rent" in request && !(request.max_rent >= 0)) return `Maximum rent: a number of ${state.currency}, 0 or more.`;
  return null;
}

function submit(event) {
  event.preventDefault();
  const request = readForm();
  const problem = checkForm(request);
  if (problem) {
    $("result").hidden = true;
    return showMessage(problem);
  }
  showMessage("");
  busy(true);
  return withRetry(async () => {
    try {
      if (!state.map || state.map.city !== request.city) {
        state.map = await call(`v1/location/map?city=${encodeURIComponent(request.city)}`);
      }
      const answer = await call("v1/location/recommend", {method: "POST", body: JSON.stringify(request)});
      state.answer = answer;
      state.request = request;
      state.selected = null;
      state.view = null;
      render();
      showMessage("");
    } catch (err) {
      $("result").hidden = true;  // never leave picks on screen that do not answer the question asked
      throw err;
    } finally {
      busy(false);
    }
  });
}

// --- drawing ----------------------------------------------------------------------------------

// Every amount is in the served model's currency (its lake's settings.yaml), said by each answer.
function showCurrency(code) {
  state.currency = code;
  document.querySelectorAll(".currency").forEach((node) => { node.textContent = code; });
}

function money(x) {
  if (x === null || x === undefined) return "–";
  const abs = Math.abs(x);
  const [value, digits, suffix] = abs >= 1e6 ? [x / 1e6, 2, "M"] : abs >= 1e3 ? [x / 1e3, 0, "k"] : [x, 0, ""];
  const number = new Intl.NumberFormat("en", {style: "currency", currency: state.currency, currencyDisplay: "narrowSymbol",
    minimumFractionDigits: digits, maximumFractionDigits: digits}).format(value);
  return number + suffix;
}

function projection(cells) {
  const lats = cells.map((c) => c.lat), lons = cells.map((c) => c.lon);
  const lat0 = (Math.min(...lats) + Math.max(...lats)) / 2;
  const kx = Math.cos(lat0 * Math.PI / 180) * 1000, ky = 1000; // ~ equirectangular, in milli-degrees
  return {x: (lon) => lon * kx, y: (lat) => -lat * ky};
}

function classes(values) {
  // quantile classes; equal breaks collapse, so a city where every cell scores alike gets one class
  const sorted = [...values].sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  const breaks = [...new Set(RAMP.slice(1).map((_, i) => q((i + 1) / RAMP.length)))].filter((b) => b > sorted[0]);
  const colours = breaks.length ? RAMP.filter((_, i) => i % Math.max(1, Math.floor(RAMP.length / (breaks.length + 1))) === 0)
    .slice(0, breaks.length + 1) : [RAMP[RAMP.length - 1]];
  return {breaks, colours, of: (v) => colours[breaks.filter((b) => v >= b).length], min: sorted[0], max: sorted[sorted.length - 1]};
}

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function render() {
  const {map, answer, request} = state;
  const svg = $("map");
  svg.replaceChildren();
  const p = projection(map.cells);
  const score = classes(map.cells.map((c) => c.predicted_revenue));
  const xs = [], ys = [];
  const cells = el("g", {class: "cells"}, svg);
  for (const cell of map.cells) {
    const attrs = {class: "cell", "data-site": cell.site_id, fill: score.of(cell.predicted_revenue)};
    let shape;
    if (cell.boundary) {
      const points = cell.boundary.map(([la, lo]) => `${p.x(lo).toFixed(2)},${p.y(la).toFixed(2)}`).join(" ");
      shape = el("polygon", {...attrs, points}, cells);
    } else {
      shape = el("circle", {...attrs, cx: p.x(cell.lon), cy: p.y(cell.lat), r: 2}, cells);
    }
    if ("max_rent" in request && cell.rent_per_sqm_month > request.max_rent) shape.classList.add("over-rent");
    el("title", {}, shape).textContent =
      `${cell.site_id}: ${money(cell.predicted_revenue)} per year, rent ${money(cell.rent_per_sqm_month)}/m²/month` +
      (cell.competitors ? `, ${cell.competitors} competitor shops` : "");
    shape.addEventListener("click", () => select(cell.site_id));
    xs.push(p.x(cell.lon));
    ys.push(p.y(cell.lat));
  }
  const rivals = el("g", {class: "competitors"}, svg);
  for (const cell of map.cells.filter((c) => c.competitors > 0)) {
    el("circle", {cx: p.x(cell.lon), cy: p.y(cell.lat), r: 0.5 + 0.25 * Math.min(cell.competitors, 6), class: "competitor"}, rivals);
  }
  const stores = el("g", {class: "stores"}, svg);
  for (const store of map.stores) {
    const s = 2.4;
    const mark = el("rect", {x: p.x(store.lon) - s, y: p.y(store.lat) - s, width: 2 * s, height: 2 * s, class: "store"}, stores);
    el("title", {}, mark).textContent = `Own store ${store.store_id}` + (store.format ? ` (${store.format})` : "") +
      (store.revenue_annualised ? `: ${money(store.revenue_annualised)} per year` : "");
  }
  const picks = el("g", {class: "picks"}, svg);
  for (const pick of answer.picks) {
    const g = el("g", {class: "pick", "data-site": pick.site_id, "data-rank": pick.rank, tabindex: "0", role: "button",
      "aria-label": `Pick ${pick.rank}: site ${pick.site_id}, net gain ${money(pick.net_gain)} per year`}, picks);
    el("circle", {cx: p.x(pick.lon), cy: p.y(pick.lat), r: 4.2}, g);
    const label = el("text", {x: p.x(pick.lon), y: p.y(pick.lat), "text-anchor": "middle", "dominant-baseline": "central"}, g);
    label.textContent = String(pick.rank);
    g.addEventListener("click", () => select(pick.site_id));
    g.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        select(pick.site_id);
      }
    });
  }
  const pad = 6;
  state.fit = {x: Math.min(...xs) - pad, y: Math.min(...ys) - pad, w: Math.max(...xs) - Math.min(...xs) + 2 * pad,
    h: Math.max(...ys) - Math.min(...ys) + 2 * pad};
  setView(state.view || state.fit);
  $("map-caption").textContent = `${answer.city}: ${map.cells.length} candidate cells shaded by ${map.score}; ` +
    `${map.stores.length} own stores; the ${answer.picks.length} picks numbered.`;
  renderLegend(score);
  renderTable();
  $("provenance").textContent = `Model version ${answer.model_version} · data up to ${answer.data_date || "unknown"} · ` +
    `${answer.feasible} of ${answer.candidates} sites satisfied the constraints · objective: ` +
    (answer.objective === "coverage" ? "residents reached" : "net revenue gain");
  $("result").hidden = false;
}

function renderLegend(score) {
  const legend = $("legend");
  legend.replaceChildren();
  const title = document.createElement("p");
  title.className = "legend-title";
  title.textContent = `Predicted revenue of a new store in the cell (${state.currency} per year)`;
  legend.appendChild(title);
  const list = document.createElement("ul");
  const edges = [score.min, ...score.breaks, score.max];
  score.colours.forEach((colour, i) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour;
    item.append(swatch, edges[i] === edges[i + 1] ? money(edges[i]) : `${money(edges[i])} – ${money(edges[i + 1])}`);
    list.appendChild(item);
  });
  for (const [cls, text] of [["swatch store", "own store"], ["swatch competitor", "competitor shops (dot grows with the count)"],
    ["swatch pick", "recommended site, by rank"], ["swatch over-rent", "over the rent limit"]]) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = cls;
    item.append(swatch, text);
    list.appendChild(item);
  }
  legend.appendChild(list);
}

function renderTable() {
  const body = document.querySelector("#picks tbody");
  // two rows per pick: the figures, then its three reasons across the whole table
  body.replaceChildren(...state.answer.picks.flatMap((pick) => {
    const row = document.createElement("tr");
    row.className = "pick-row";
    row.dataset.site = pick.site_id;
    row.tabIndex = 0;
    row.setAttribute("aria-label", `Pick ${pick.rank}, site ${pick.site_id}: select to show it on the map`);
    const cells = [String(pick.rank), pick.site_id + (pick.forced ? " (asked for)" : ""), money(pick.predicted_revenue),
      money(pick.cannibalisation), money(pick.net_gain), pick.rent_per_sqm_month.toFixed(0)];
    cells.forEach((text, i) => {
      const td = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) td.scope = "row";
      if (i >= 2) td.className = "num";
      td.textContent = text;
      row.appendChild(td);
    });
    const reasons = document.createElement("tr");
    reasons.className = "reasons";
    reasons.dataset.site = pick.site_id;
    const why = document.createElement("td");
    why.colSpan = cells.length;
    const list = document.createElement("ul");
    for (const reason of pick.reasons) {
      const li = document.createElement("li");
      li.textContent = reason;
      list.appendChild(li);
    }
    why.appendChild(list);
    reasons.appendChild(why);
    for (const node of [row, reasons]) node.addEventListener("click", () => select(pick.site_id));
    row.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        select(pick.site_id);
      }
    });
    return [row, reasons];
  }));
  const a = state.answer;
  $("totals").textContent = `Net gain of the ${a.picks.length} sites: ${money(a.total_net_gain)} per year` +
    (a.covered_population ? ` · new residents within reach: ${Math.round(a.covered_population).toLocaleString("en")}` : "");
}

function select(siteId) {
  state.selected = state.selected === siteId ? null : siteId;
  for (const node of document.querySelectorAll("[data-site]")) {
    node.classList.toggle("selected", node.dataset.site === state.selected);
  }
  const row = document.querySelector(`#picks tbody tr.pick-row[data-site="${CSS.escape(siteId)}"]`);
  if (row && state.selected) row.scrollIntoView({block: "nearest"});
}

// --- zoom and pan (viewBox) -------------------------------------------------------------------

function setView(v) {
  state.view = v;
  $("map").setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
}

function zoom(factor) {
  const v = state.view;
  if (!v) return;
  const w = v.w * factor, h = v.h * factor;
  setView({x: v.x + (v.w - w) / 2, y: v.y + (v.h - h) / 2, w, h});
}

function enablePan(svg) {
  let from = null;
  svg.addEventListener("pointerdown", (e) => {
    if (e.target.closest(".pick")) return;
    from = {x: e.clientX, y: e.clientY, view: state.view};
  });
  svg.addEventListener("pointermove", (e) => {
    if (!from || !state.view) return;
    const scale = from.view.w / svg.clientWidth;
    const dx = (e.clientX - from.x) * scale, dy = (e.clientY - from.y) * scale;
    if (Math.abs(dx) + Math.abs(dy) > 0) setView({...from.view, x: from.view.x - dx, y: from.view.y - dy});
  });
  for (const end of ["pointerup", "pointerleave"]) svg.addEventListener(end, () => { from = null; });
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    zoom(e.deltaY > 0 ? 1.25 : 0.8);
  }, {passive: false});
}

// --- CSV --------------------------------------------------------------------------------------

const CSV_COLUMNS = ["rank", "site_id", "lat", "lon", "predicted_revenue", "cannibalisation", "net_gain",
  "rent_per_sqm_month", "reason_1", "reason_2", "reason_3", "city", "objective", "model_version", "data_date"];

function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function download() {
  const a = state.answer;
  const rows = a.picks.map((p) => [p.rank, p.site_id, p.lat, p.lon, p.predicted_revenue, p.cannibalisation, p.net_gain,
    p.rent_per_sqm_month, p.reasons[0], p.reasons[1], p.reasons[2], a.city, a.objective, a.model_version, a.data_date]);
  const text = [CSV_COLUMNS, ...rows].map((r) => r.map(csvCell).join(",")).join("\r\n") + "\r\n";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], {type: "text/csv"}));
  link.download = `quanyu-sites-${a.city}-k${a.k}-v${a.model_version}.csv`.replace(/[^\w.\-]+/g, "_");
  document.body.appendChild(link);
  link.click();
  link.remove();
}

// --- wiring -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return showMessage("Enter the API key.");
    sessionStorage.setItem(KEY_STORE, key);
    $("api-key").value = "";
    showMessage("");
    start();
  });
  $("forget-key").addEventListener("click", () => askForKey("Key forgotten. Enter a key to continue."));
  $("plan-form").addEventListener("submit", submit);
  $("download").addEventListener("click", download);
  $("zoom-in").addEventListener("click", () => zoom(0.8));
  $("zoom-out").addEventListener("click", () => zoom(1.25));
  $("zoom-reset").addEventListener("click", () => setView(state.fit));
  enablePan($("map"));
  start();
});
