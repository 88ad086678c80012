// stream-server web client: webcam → WebRTC → names drawn over the video,
// a live event feed, and enrolment from the current frame.
// Every URL is relative to this page, so it works behind a proxy under any path,
// and WebSockets use wss: when the page is served over https:.

const KEY_STORAGE = "stream-server.api-key";
const MAX_EVENTS = 60;
const STALE_RESULT_MS = 1000;

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
  constructor(status, message) {
    super(message);
    this.status = status;
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
  const response = await fetch(httpUrl(path, params), init);
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { error: text };
  }
  if (!response.ok) {
    throw new ApiError(response.status, errorText(response.status, body));
  }
  return body;
}

function errorText(status, body) {
  if (status === 401 || status === 403) return "not authorised: check the API key";
  if (status === 404 && body && body.detail === "Not Found") {
    return "this server does not offer that API";
  }
  if (!body) return `HTTP ${status}`;
  if (typeof body.error === "string") return body.error;
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) {
    return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  }
  if (body.error && body.error.message) return body.error.message;
  return `HTTP ${status}`;
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
    addEvent({ type: "error", error: `event feed closed (${ev.code} ${ev.reason || ""})` });
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

async function uploadFace(identity, blob) {
  // All-or-nothing on the server: a 2xx means the face is stored.
  const form = new FormData();
  form.append("files", blob, "webcam.jpg");
  return api(`identities/${encodeURIComponent(identity.id)}/faces`, { method: "POST", form });
}

async function enrol(event) {
  event.preventDefault();
  const name = $("enrol-name").value.trim();
  if (!name) return;
  // Capture at the click: the frame on screen now is the one enrolled.
  const blob = await captureFrame();
  if (!blob) {
    enrolMessage("Start the camera first.", "error");
    return;
  }
  $("enrol-button").disabled = true;
  enrolMessage("Enrolling…");
  try {
    const identity = await api("identities", { method: "POST", json: { name } });
    try {
      await uploadFace(identity, blob);
    } catch (err) {
      // No usable face: leave no identity without faces behind.
      await api(`identities/${encodeURIComponent(identity.id)}`, { method: "DELETE" }).catch(
        () => {},
      );
      throw err;
    }
    enrolMessage(`Enrolled ${name}.`, "ok");
    $("enrol-name").value = "";
    await loadPeople();
  } catch (err) {
    enrolMessage(`Not enrolled: ${err.message}`, "error");
  } finally {
    $("enrol-button").disabled = false;
  }
}

async function loadPeople() {
  const list = $("people");
  const message = $("people-message");
  try {
    const page = await api("identities", { params: { offset: 0, limit: 100 } });
    const items = page.items || [];
    list.replaceChildren(...items.map(personItem));
    $("people-total").textContent = `(${page.total ?? items.length})`;
    message.textContent = items.length ? "" : "Nobody enrolled yet.";
    message.className = "message";
  } catch (err) {
    list.replaceChildren();
    $("people-total").textContent = "";
    message.textContent = `Could not list people: ${err.message}`;
    message.className = "message error";
  }
}

function personItem(person) {
  const li = document.createElement("li");
  li.className = "person";
  li.dataset.id = person.id;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = person.name;
  const faces = document.createElement("span");
  faces.className = "faces muted";
  const n = person.face_count ?? 0;
  faces.textContent = `${n} face${n === 1 ? "" : "s"}`;
  const add = document.createElement("button");
  add.type = "button";
  add.className = "small";
  add.textContent = "+ face";
  add.title = `add the current camera frame to ${person.name}`;
  add.onclick = async () => {
    const blob = await captureFrame();
    if (!blob) {
      enrolMessage("Start the camera first.", "error");
      return;
    }
    add.disabled = true;
    try {
      await uploadFace(person, blob);
      enrolMessage(`Added a face to ${person.name}.`, "ok");
      await loadPeople();
    } catch (err) {
      enrolMessage(`Not added: ${err.message}`, "error");
    } finally {
      add.disabled = false;
    }
  };
  li.append(name, faces, add);
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
    loadPeople();
    if (state.eventsSocket) connectEventSocket();
  });
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => stop());
  $("enrol-form").addEventListener("submit", enrol);
  $("people-refresh").addEventListener("click", loadPeople);
  $("all-streams").addEventListener("change", (event) => {
    if (event.target.checked) connectEventSocket();
    else disconnectEventSocket();
  });
  window.addEventListener("pagehide", () => stop(false));
  loadPeople();
}

init();
