// The search page: text, photo and "more like this" searches over the service's own JSON endpoints.
// A search lives in the page URL (?q=... or ?similar=<id>, with &min=<threshold>) so it can be shared;
// a photo search cannot be (the photo stays in this browser). No framework, no build step.
"use strict";

const PAGE_SIZE = 20;
const KEY_STORAGE = "clip-vectorize-api-key";
const STATUS_POLL_MS = 2000;
const MODEL_RETRY_MS = 5000;

const $ = (id) => document.getElementById(id);
const needsKey = document.body.dataset.needsKey === "true";

let current = null; // the search on screen: {kind: "text"|"similar"|"photo", value, label?, results, received}
let generation = 0; // which search is current: an answer to an older one is dropped, not shown
let loading = false;
let retryTimer = null;
let statusTimer = null;
const thumbnailUrls = []; // object URLs of fetched thumbnails, released when the grid is cleared

// ---------------------------------------------------------------- calling the service

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (apiKey()) headers.set("Authorization", `Bearer ${apiKey()}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && needsKey) {
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey("That API key was not accepted; enter it again.");
  }
  return response;
}

// Point ids may be unsigned 64-bit integers, which a JavaScript number rounds above 2^53: those stay exact, as
// text (the service takes an id as digits in a string too). Browsers without JSON.parse's source text access
// (before Chrome 114, Firefox 135, Safari 18.4) still round them.
const ID_KEYS = new Set(["id", "image_id"]);

function keepIdsExact(key, value, context) {
  const unsafeId = ID_KEYS.has(key) && typeof value === "number" && !Number.isSafeInteger(value);
  return unsafeId && context ? context.source : value;
}

async function callJson(path, options) {
  const response = await call(path, options);
  let body = null;
  try {
    body = JSON.parse(await response.text(), keepIdsExact);
  } catch (ignored) {
    body = { status: "error", error: `the service answered ${response.status} without JSON`, code: "bad_response" };
  }
  return { response, body };
}

function postJson(path, payload) {
  return callJson(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

// ---------------------------------------------------------------- searching

function threshold() {
  const value = Number($("threshold").value);
  return value > 0 ? value : null;
}

function searchOptions(offset) {
  const options = { limit: PAGE_SIZE, offset };
  if (threshold() !== null) options.score_threshold = threshold();
  return options;
}

function request(search, offset) {
  if (search.kind === "text") return postJson("/search", { text: search.value, ...searchOptions(offset) });
  if (search.kind === "similar") return postJson("/search-similar", { id: search.value, ...searchOptions(offset) });
  const form = new FormData();
  form.append("image", search.value, search.value.name || "photo");
  for (const [name, value] of Object.entries(searchOptions(offset))) form.append(name, String(value));
  return callJson("/search-by-image", { method: "POST", body: form });
}

async function runSearch(search, { append = false } = {}) {
  clearTimeout(retryTimer);
  if (append && loading) return; // one page at a time
  const mine = append ? generation : ++generation;
  if (!append) {
    clearResults();
    current = { ...search, results: [], received: 0 };
  }
  setLoading(true);
  showMessage(append ? "Loading more…" : "Searching…");
  try {
    const { response, body } = await request(current, current.received);
    if (mine !== generation) return;
    if (!response.ok) return showFailure(response, body, () => runSearch(search, { append }));
    showPage(body);
  } catch (error) {
    if (mine === generation) showMessage(`The service could not be reached (${error.message}).`, true);
  } finally {
    if (mine === generation) setLoading(false);
  }
}

function showPage(body) {
  current.received += body.results.length;
  const shown = new Set(current.results.map((result) => String(result.id)));
  const fresh = body.results.filter((result) => !shown.has(String(result.id))); // the index may move a result
  current.results.push(...fresh);
  fresh.forEach(addResult);
  $("load-more").hidden = body.results.length < PAGE_SIZE;
  describeResults(body);
}

function setLoading(value) {
  loading = value;
  $("load-more").disabled = value;
}

function describeResults(body) {
  const count = current.results.length;
  if (count === 0) {
    const hint = threshold() !== null ? " Lower the minimum score, or try other words." : " Try other words.";
    showMessage(`No images match.${hint}`);
  } else {
    showMessage("");
  }
  const chosen = current.label ? `“${current.label}”` : "the one chosen"; // a shared ?similar= link has no name
  const what = { text: `“${current.value}”`, similar: `images like ${chosen}`, photo: "your photo" }[current.kind];
  const encoder = body.encoder ? `, ${body.encoder} encoder` : "";
  $("query-summary").textContent = count ? `${count} results for ${what} (model ${body.model}${encoder})` : "";
}

function showFailure(response, body, retry) {
  if (response.status === 503 && body.code === "model_not_ready") {
    showMessage("The model is still loading; trying again in a few seconds…");
    retryTimer = setTimeout(retry, MODEL_RETRY_MS);
  } else if (body.code === "no_collection") {
    showMessage("The gallery is empty: nothing has been indexed yet. Start the service with CLIP_GALLERY_DIR, " +
      "or run python -m clip_vectorize.gallery index FOLDER.", true);
  } else if (response.status !== 401) {
    showMessage(`${body.error || "The search failed."} (${response.status} ${body.code || ""})`, true);
  }
}

function showMessage(text, isError = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", isError);
}

// ---------------------------------------------------------------- the grid

function clearResults() {
  $("results").replaceChildren();
  $("query-summary").textContent = "";
  $("load-more").hidden = true;
  thumbnailUrls.splice(0).forEach((url) => URL.revokeObjectURL(url));
}

function addResult(result) {
  const item = document.createElement("li");
  item.className = "result";
  item.dataset.id = String(result.id);
  const frame = document.createElement("div");
  frame.className = "frame";
  item.append(frame, resultMeta(result));
  $("results").append(item);
  showThumbnail(frame, result);
}

function resultMeta(result) {
  const meta = document.createElement("div");
  meta.className = "meta";
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = result.score.toFixed(3);
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = resultName(result);
  const similar = document.createElement("button");
  similar.type = "button";
  similar.className = "more-like-this";
  similar.textContent = "More like this · 相似图片";
  similar.addEventListener("click", () => navigate({ kind: "similar", value: result.id, label: resultName(result) }));
  meta.append(score, name, similar);
  return meta;
}

function resultName(result) {
  return String(result.payload.image_id ?? result.payload.path ?? result.id);
}

async function showThumbnail(frame, result) {
  const img = document.createElement("img");
  img.alt = resultName(result);
  img.loading = "lazy";
  if (result.payload.url && !result.payload.path) {
    img.src = result.payload.url; // a URL item: the browser loads it from where it lives
    frame.append(img);
    return;
  }
  // ?v=: a changed photo (new content hash after its next index run) is a new URL, not a stale cached one.
  const version = encodeURIComponent(result.payload.content_hash || "");
  let response = null;
  try {
    response = await call(`/gallery/thumbnails/${encodeURIComponent(result.id)}?v=${version}`);
  } catch (ignored) {
    // shown as missing, below
  }
  if (!response || !response.ok) {
    const missing = document.createElement("span");
    missing.className = "missing";
    missing.textContent = "no thumbnail";
    frame.append(missing);
    return;
  }
  const url = URL.createObjectURL(await response.blob()); // fetched with the key: an <img src> could not send it
  thumbnailUrls.push(url);
  img.src = url;
  frame.append(img);
}

// ---------------------------------------------------------------- the URL holds the search

function navigate(search) {
  showQuery(search);
  if (search.kind !== "photo") {
    const params = new URLSearchParams();
    params.set(search.kind === "text" ? "q" : "similar", String(search.value));
    if (threshold() !== null) params.set("min", String(threshold()));
    history.pushState(null, "", `?${params}`);
  } else {
    history.pushState(null, "", location.pathname);
  }
  runSearch(search);
}

function searchFromUrl() {
  const params = new URLSearchParams(location.search);
  const min = Math.min(Number(params.get("min")) || 0, 1);
  setThreshold(min > 0 ? min : 0); // a URL without min means no threshold, whatever the slider said before
  const text = params.get("q");
  const similar = params.get("similar"); // as text: the service takes an id as digits too
  const search = text ? { kind: "text", value: text } : similar ? { kind: "similar", value: similar } : null;
  showQuery(search);
  return search;
}

function showQuery(search) {
  $("query").value = search?.kind === "text" ? search.value : ""; // never a stale text over other results
}

function setThreshold(value) {
  $("threshold").value = String(value);
  $("threshold-value").textContent = value > 0 ? Number(value).toFixed(2) : "off";
}

// ---------------------------------------------------------------- the gallery's state

async function refreshStatus() {
  clearTimeout(statusTimer);
  const { response, body } = await callJson("/gallery/status");
  if (!response.ok) {
    $("gallery-status").textContent = response.status === 401 ? "" : `Gallery: ${body.error || response.status}`;
    return;
  }
  const run = body.indexing;
  let text = body.exists ? `${body.points} images indexed · model ${body.model}` : "The gallery is empty.";
  if (run && run.state === "running") {
    text += ` · indexing ${run.done} of ${run.total || "?"}…`;
    statusTimer = setTimeout(refreshStatus, STATUS_POLL_MS);
  } else if (run && run.state === "failed") {
    text += ` · the last index run failed: ${run.error}`;
  }
  $("gallery-status").textContent = text;
}

// ---------------------------------------------------------------- the API key

function askForKey(message) {
  $("key-form").hidden = false;
  showMessage(message, true);
  $("api-key").focus();
}

function keyEntered(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  $("key-form").hidden = true;
  showMessage("");
  start();
}

// ---------------------------------------------------------------- photos: picker and drop zone

function searchPhoto(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showMessage(`${file.name} is not an image.`, true);
    return;
  }
  navigate({ kind: "photo", value: file });
}

function wireDropZone() {
  const zone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) zone.classList.remove("over");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    searchPhoto(event.dataTransfer.files[0]);
  });
  zone.addEventListener("click", () => $("photo").click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") $("photo").click();
  });
}

// ---------------------------------------------------------------- start

function start() {
  if (needsKey && !apiKey()) {
    askForKey("This service needs its API key.");
    return;
  }
  refreshStatus();
  const search = searchFromUrl();
  if (search) runSearch(search);
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("query").value.trim();
  if (text) navigate({ kind: "text", value: text });
});
$("threshold").addEventListener("input", () => setThreshold(Number($("threshold").value)));
$("threshold").addEventListener("change", () => current && current.kind !== "photo"
  ? navigate(current) : current && runSearch(current));
$("photo").addEventListener("change", () => searchPhoto($("photo").files[0]));
$("load-more").addEventListener("click", () => runSearch(current, { append: true }));
$("key-form").addEventListener("submit", keyEntered);
window.addEventListener("popstate", () => {
  const search = searchFromUrl();
  if (search) {
    runSearch(search);
  } else {
    generation += 1; // back to the page without a search: nothing on screen, and no late answer either
    current = null;
    clearResults();
    showMessage("");
  }
});
wireDropZone();
start();
