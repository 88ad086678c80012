// stream-server web client: webcam → WebRTC → names drawn over the video,
// a live event feed, and enrolment from the current frame.
// Every URL is relative to this page, so it works behind a proxy under any path,
// and WebSockets use wss: when the page is served over https:.

const KEY_STORAGE = "stream-server.api-key";
const MAX_EVENTS = 60;
const STALE_RESULT_MS = 1000;
const WS_UNAUTHORIZED = 4401; // the server's close code for a missing or wrong key

const $ = (id) => document.getElementById(id);

const state = {
  pc: null,
  channel: null,
  media: null,
  streamId: null,
  lastResultAt: 0,
  resultTimes: [],
  eventsSocket: null,
  staleTimer: null,
  enrolling: false,
  enrolHeldUntil: 0, // after a 429: no enrolment before this time (ms)
  enrolTimer: null,
};

// -- API access -----------------------------------------------------------------
function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

function httpUrl(path, params = {}) {
  const url = new URL(path, document.baseURI);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  return url;
}

function wsUrl(path, params = {}) {
  const url = httpUrl(path, params);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

class ApiError extends Error {
  constructor(status, message, { code = "", retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.code = code; // the API's machine-readable "error" field
    this.retryAfter = retryAfter; // seconds, from a 429's Retry-After
  }
}

async function api(path, { method = "GET", json, form, params } = {}) {
  const init = { method, headers: authHeaders() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form; // the browser sets the multipart boundary
  }
  let response;
  try {
    response = await fetch(httpUrl(path, params), init);
  } catch (err) {
    throw new ApiError(0, `the server cannot be reached (${err.message || err})`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null; // not JSON: an HTML error page of a proxy, say
  }
  if (!response.ok) {
    const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
    const error = new ApiError(response.status, errorText(response, body, retryAfter), {
      code: body && typeof body.error === "string" ? body.error : "",
      retryAfter,
    });
    if (response.status === 401) showKeyProblem();
    throw error;
  }
  hideKeyProblem(); // any call that passed had the key it needed
  return body;
}

function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(1, Math.ceil(seconds));
  const date = Date.parse(value); // the HTTP-date form
  return Number.isNaN(date) ? null : Math.max(1, Math.ceil((date - Date.now()) / 1000));
}

// What the API said went wrong, for a person: every API error is JSON
// {"error": <code>, "detail": <what went wrong>}; a refused enrolment adds the
// per-image results, a validation error a list of problems.
function apiDetail(body) {
  if (!body) return "";
  if (Array.isArray(body.results)) {
    const reasons = body.results.filter((r) => r.error).map((r) => r.error);
    if (reasons.length) return reasons.join("; ");
  }
  const detail = body.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const field = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
        return field ? `${field}: ${d.msg}` : d.msg || JSON.stringify(d);
      })
      .join("; ");
  }
  if (detail && typeof detail === "object") return JSON.stringify(detail);
  return typeof body.error === "string" ? body.error.replaceAll("_", " ") : "";
}

function errorText(response, body, retryAfter) {
  const status = response.status;
  const detail = apiDetail(body);
  if (status === 401) {
    return apiKey()
      ? "the API key was refused: check it and save it again"
      : "this server requires an API key: enter it at the top of the page";
  }
  if (status === 429) {
    const wait = retryAfter ? `wait ${retryAfter} s` : "wait a moment";
    return `too many requests: ${wait} and try again${detail ? ` (${detail})` : ""}`;
  }
  return detail || `HTTP ${status}${response.statusText ? ` ${response.statusText}` : ""}`;
}

// -- API key --------------------------------------------------------------------------
function showKeyProblem() {
  const message = apiKey()
    ? "The API key was refused. Enter a valid key and press Save."
    : "This server requires an API key. Enter it here and press Save.";
  const el = $("key-message");
  el.textContent = message;
  el.hidden = false;
  $("key-form").classList.add("needed");
}

function hideKeyProblem() {
  $("key-message").hidden = true;
  $("key-form").classList.remove("needed");
}

// -- status -------------------------------------------------------------------------
function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = `badge ${kind}`;
}

// -- WebRTC ---------------------------------------------------------------------------
async function iceServers() {
  try {
    const config = await api("webrtc/config");
    return config.iceServers || [];
  } catch (err) {
    console.warn("no ICE configuration from the server:", err);
    return [];
  }
}

function iceGatheringDone(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    // With STUN/TURN servers gathering can take long: send what we have.
    setTimeout(resolve, timeoutMs);
  });
}

async function start() {
  $("start").disabled = true;
  setStatus("starting camera…", "busy");
  try {
    state.media = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: false,
    });
  } catch (err) {
    setStatus(`camera refused: ${err.message || err.name}`, "error");
    $("start").disabled = false;
    return;
  }
  const video = $("video");
  video.srcObject = state.media;
  $("stage-hint").hidden = true;

  setStatus("connecting…", "busy");
  const pc = new RTCPeerConnection({ iceServers: await iceServers() });
  state.pc = pc;
  const channel = pc.createDataChannel("results");
  state.channel = channel;
  channel.onmessage = (msg) => onChannelMessage(msg.data);
  channel.onopen = () => setStatus("live", "live");
  channel.onclose = () => {
    if (state.pc === pc) setStatus("disconnected", "error");
  };
  for (const track of state.media.getVideoTracks()) {
    pc.addTransceiver(track, { direction: "sendonly", streams: [state.media] });
  }
  pc.onconnectionstatechange = () => {
    if (state.pc !== pc) return;
    if (pc.connectionState === "failed") setStatus("connection failed", "error");
    if (pc.connectionState === "disconnected") setStatus("connection lost", "error");
  };

  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc);
    const answer = await api("webrtc/offer", {
      method: "POST",
      params: { api_key: apiKey() },
      json: {
        sdp: pc.localDescription.sdp,
        type: pc.localDescription.type,
        detector: $("detector").value,
      },
    });
    state.streamId = answer.stream_id;
    $("stream-id").textContent = `stream ${answer.stream_id}`;
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  } catch (err) {
    setStatus(`could not connect: ${err.message}`, "error");
    stop(false);
    return;
  }
  $("stop").disabled = false;
  state.staleTimer = setInterval(clearStaleOverlay, 250);
  if ($("all-streams").checked) connectEventSocket();
}

function stop(resetStatus = true) {
  if (state.channel) state.channel.onclose = null;
  if (state.pc) state.pc.close();
  state.pc = null;
  state.channel = null;
  if (state.media) state.media.getTracks().forEach((t) => t.stop());
  state.media = null;
  clearInterval(state.staleTimer);
  $("video").srcObject = null;
  $("overlay").replaceChildren();
  $("stage-hint").hidden = false;
  $("stream-id").textContent = "";
  $("start").disabled = false;
  $("stop").disabled = true;
  if (resetStatus) setStatus("idle", "idle");
}

function onChannelMessage(data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  if (msg.type === "frame.result") {
    drawResult(msg);
  } else if (!$("all-streams").checked) {
    addEvent(msg); // with "all streams" the event socket shows them
  }
  // For scripts that embed or drive the page (dashboards, benchmarks).
  const name = msg.type === "frame.result" ? "stream-server:result" : "stream-server:event";
  window.dispatchEvent(new CustomEvent(name, { detail: msg }));
}

// -- overlay -----------------------------------------------------------------------------
function drawResult(result) {
  const now = performance.now();
  state.lastResultAt = now;
  state.resultTimes.push(now);
  while (state.resultTimes.length && now - state.resultTimes[0] > 2000) state.resultTimes.shift();

  const overlay = $("overlay");
  const boxes = result.faces.map((face) => faceBox(face, result.width, result.height));
  overlay.replaceChildren(...boxes);

  const fps = state.resultTimes.length / Math.min(2, (now - state.resultTimes[0]) / 1000 || 1);
  $("stat-fps").textContent = `${fps.toFixed(1)} fps`;
  $("stat-latency").textContent = `${result.latency_ms.toFixed(0)} ms`;
  $("stat-dropped").textContent = String(result.dropped);
  $("stat-faces").textContent = String(result.faces.length);
}

function faceBox(face, width, height) {
  const [x, y, w, h] = face.box;
  const box = document.createElement("div");
  box.className = `face-box ${face.status}`;
  box.style.left = `${(100 * x) / width}%`;
  box.style.top = `${(100 * y) / height}%`;
  box.style.width = `${(100 * w) / width}%`;
  box.style.height = `${(100 * h) / height}%`;
  box.dataset.trackId = face.track_id;
  const label = document.createElement("span");
  label.className = "face-label";
  if (face.status === "matched") {
    label.textContent = face.name;
    label.title = `track ${face.track_id}, similarity ${face.similarity}`;
  } else {
    label.textContent = face.status === "unknown" ? "unknown" : "…";
    label.title = `track ${face.track_id}`;
  }
  box.append(label);
  return box;
}

function clearStaleOverlay() {
  if (performance.now() - state.lastResultAt > STALE_RESULT_MS) {
    $("overlay").replaceChildren();
  }
}

// -- event feed ---------------------------------------------------------------------------
function describeEvent(ev) {
  switch (ev.type) {
    case "face.matched":
      return `${ev.name} (track ${ev.track_id}, similarity ${ev.similarity.toFixed(2)})`;
    case "face.unknown":
      return `unknown face (track ${ev.track_id})`;
    case "track.started":
      return `face appeared (track ${ev.track_id})`;
    case "track.ended":
      return `face left (track ${ev.track_id}${ev.name ? `, ${ev.name}` : ""})`;
    case "stream.status":
      return `stream ${ev.state}${ev.detail ? `: ${ev.detail}` : ""}`;
    case "error":
      return ev.error;
    default:
      return ev.type;
  }
}

function addEvent(ev) {
  if (!ev || !ev.type || ev.type === "subscribed") return;
  const li = document.createElement("li");
  li.className = `event ${ev.type.replace(".", "-")}`;
  li.dataset.type = ev.type;
  const time = document.createElement("time");
  time.textContent = new Date((ev.emitted_at || Date.now() / 1000) * 1000).toLocaleTimeString();
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = describeEvent(ev);
  li.append(time, what);
  if ($("all-streams").checked && ev.stream_id) {
    const stream = document.createElement("span");
    stream.className = "stream muted";
    stream.textContent = ev.stream_id;
    li.append(stream);
  }
  if (typeof ev.latency_ms === "number") {
    const lat = document.createElement("span");
    lat.className = "latency muted";
    lat.textContent = `${ev.latency_ms.toFixed(0)} ms`;
    li.append(lat);
  }
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function connectEventSocket() {
  disconnectEventSocket();
  const socket = new WebSocket(wsUrl("ws/events", { api_key: apiKey() }));
  state.eventsSocket = socket;
  socket.onmessage = (msg) => {
    try {
      addEvent(JSON.parse(msg.data));
    } catch {
      /* not JSON: ignore */
    }
  };
  socket.onclose = (ev) => {
    if (state.eventsSocket !== socket) return;
    state.eventsSocket = null;
    if (ev.code === WS_UNAUTHORIZED) {
      showKeyProblem();
      addEvent({ type: "error", error: "event feed refused: the API key is missing or wrong" });
    } else {
      addEvent({ type: "error", error: `event feed closed (${ev.code} ${ev.reason || ""})` });
    }
  };
}

function disconnectEventSocket() {
  const socket = state.eventsSocket;
  state.eventsSocket = null;
  if (socket) socket.close();
}

// -- enrolment ----------------------------------------------------------------------------
function captureFrame() {
  const video = $("video");
  if (!state.media || !video.videoWidth) return null;
  const full = document.createElement("canvas");
  full.width = video.videoWidth;
  full.height = video.videoHeight;
  full.getContext("2d").drawImage(video, 0, 0, full.width, full.height);
  const preview = $("capture");
  preview.width = 160;
  preview.height = Math.round((160 * full.height) / full.width);
  preview.getContext("2d").drawImage(full, 0, 0, preview.width, preview.height);
  preview.hidden = false;
  return new Promise((resolve) => full.toBlob(resolve, "image/jpeg", 0.92));
}

function enrolMessage(text, kind = "") {
  const el = $("enrol-message");
  el.textContent = text;
  el.className = `message ${kind}`;
}

// Enrolment is rate limited per client (FACE_RATE_LIMIT): after a 429 the
// enrolment buttons wait out the server's Retry-After, counting down.
function enrolHeld() {
  return Date.now() < state.enrolHeldUntil;
}

function updateEnrolButtons() {
  const held = enrolHeld();
  const button = $("enrol-button");
  button.disabled = state.enrolling || held;
  const left = Math.ceil((state.enrolHeldUntil - Date.now()) / 1000);
  button.textContent = held ? `Wait ${left} s` : "Capture & enrol";
  for (const add of document.querySelectorAll("#people .add-face")) {
    add.disabled = state.enrolling || held;
  }
}

function holdEnrolment(seconds) {
  state.enrolHeldUntil = Date.now() + seconds * 1000;
  clearInterval(state.enrolTimer);
  state.enrolTimer = setInterval(() => {
    if (!enrolHeld()) clearInterval(state.enrolTimer);
    updateEnrolButtons();
  }, 500);
  updateEnrolButtons();
}

function enrolFailed(prefix, err) {
  if (err.status === 429) holdEnrolment(err.retryAfter || 60);
  enrolMessage(`${prefix}: ${err.message}`, "error");
}

async function uploadFace(identity, blob) {
  // All-or-nothing on the server: a 2xx means the face is stored.
  const form = new FormData();
  form.append("files", blob, "webcam.jpg");
  return api(`identities/${encodeURIComponent(identity.id)}/faces`, { method: "POST", form });
}

async function enrol(event) {
  event.preventDefault();
  const name = $("enrol-name").value.trim();
  if (!name || state.enrolling || enrolHeld()) return;
  // Capture at the click: the frame on screen now is the one enrolled.
  const blob = await captureFrame();
  if (!blob) {
    enrolMessage("Start the camera first.", "error");
    return;
  }
  state.enrolling = true;
  updateEnrolButtons();
  enrolMessage("Enrolling…");
  try {
    const identity = await api("identities", { method: "POST", json: { name } });
    try {
      await uploadFace(identity, blob);
    } catch (err) {
      // No face stored (refused, rate limited, …): leave no empty identity behind.
      await api(`identities/${encodeURIComponent(identity.id)}`, { method: "DELETE" }).catch(
        () => {},
      );
      throw err;
    }
    enrolMessage(`Enrolled ${name}.`, "ok");
    $("enrol-name").value = "";
    await loadPeople(identity.id);
  } catch (err) {
    enrolFailed("Not enrolled", err);
  } finally {
    state.enrolling = false;
    updateEnrolButtons();
  }
}

async function addFace(person) {
  if (state.enrolling || enrolHeld()) return;
  const blob = await captureFrame();
  if (!blob) {
    enrolMessage("Start the camera first.", "error");
    return;
  }
  state.enrolling = true;
  updateEnrolButtons();
  try {
    await uploadFace(person, blob);
    enrolMessage(`Added a face to ${person.name}.`, "ok");
    await loadPeople(person.id);
  } catch (err) {
    enrolFailed("Not added", err);
  } finally {
    state.enrolling = false;
    updateEnrolButtons();
  }
}

// Lists the gallery; changedId: the person just enrolled or given a face, shown and marked.
async function loadPeople(changedId = null) {
  const list = $("people");
  const message = $("people-message");
  try {
    const page = await api("identities", { params: { offset: 0, limit: 100 } });
    const items = page.items || [];
    list.replaceChildren(...items.map(personItem));
    $("people-total").textContent = `(${page.total ?? items.length})`;
    message.textContent = items.length ? "" : "Nobody enrolled yet.";
    message.className = "message";
    updateEnrolButtons();
    const changed = changedId && list.querySelector(`.person[data-id="${CSS.escape(changedId)}"]`);
    if (changed) {
      changed.classList.add("changed");
      changed.scrollIntoView({ block: "nearest" });
    }
    await Promise.all(items.filter((p) => p.face_count > 0).map(showThumbnail));
  } catch (err) {
    list.replaceChildren();
    $("people-total").textContent = "";
    message.textContent = `Could not list people: ${err.message}`;
    message.className = "message error";
  }
}

async function showThumbnail(person) {
  try {
    const faces = await api(`identities/${encodeURIComponent(person.id)}/faces`);
    const face = (faces.items || [])[0];
    const img = $("people").querySelector(`.person[data-id="${CSS.escape(person.id)}"] .thumb`);
    if (!face || !img) return;
    // An <img> cannot send a header: the key goes in the query (the server strips it).
    // The server's thumbnail_url is absolute; resolve it against this page, like every URL.
    img.src = httpUrl(face.thumbnail_url.replace(/^\/+/, ""), { api_key: apiKey() }).toString();
    img.alt = person.name;
  } catch (err) {
    console.warn(`no thumbnail for ${person.name}:`, err);
  }
}

function personItem(person) {
  const li = document.createElement("li");
  li.className = "person";
  li.dataset.id = person.id;
  const thumb = document.createElement("img");
  thumb.className = "thumb";
  thumb.alt = "";
  thumb.width = 40;
  thumb.height = 40;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = person.name;
  const faces = document.createElement("span");
  faces.className = "faces muted";
  const n = person.face_count ?? 0;
  faces.textContent = `${n} face${n === 1 ? "" : "s"}`;
  const add = document.createElement("button");
  add.type = "button";
  add.className = "small add-face";
  add.textContent = "+ face";
  add.title = `add the current camera frame to ${person.name}`;
  add.onclick = () => addFace(person);
  li.append(thumb, name, faces, add);
  return li;
}

// -- wiring --------------------------------------------------------------------------------
function init() {
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    hideKeyProblem(); // until a call says otherwise
    loadPeople();
    if ($("all-streams").checked) connectEventSocket();
  });
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => stop());
  $("enrol-form").addEventListener("submit", enrol);
  $("people-refresh").addEventListener("click", () => loadPeople());
  $("all-streams").addEventListener("change", (event) => {
    if (event.target.checked) connectEventSocket();
    else disconnectEventSocket();
  });
  window.addEventListener("pagehide", () => stop(false));
  loadPeople();
}

init();
