// Qwen3-TTS playground: a plain ES module (no build step, no dependencies) over the gateway's public API.
// Every check made here is a courtesy to the user; the gateway enforces all of them again.

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "qwen3-tts-playground.api-key";
// Scheduling lead: audio starts this far after "now", so the first chunks have room to arrive without
// gaps (a small jitter buffer) while the delay stays below what a person notices.
const LEAD_S = 0.12;

// Used until /playground/config answers (an older gateway may not have it): the gateway's defaults.
const config = {
  auth_required: false,
  max_text_length: 2000,
  min_ref_audio_seconds: 3,
  max_ref_audio_seconds: 30,
  max_upload_bytes: 20 * 1024 * 1024,
};

// Test hook (also handy in the console): what actually reached the AudioContext.
const stats = { chunks: 0, samples: 0, requests: 0 };
window.playground = {
  stats,
  config,
  // null until the first Speak/Design; then whether the context runs and how far its clock has gone.
  audioClock: () => audioContext && { state: audioContext.state, time: audioContext.currentTime },
};

// ---------------------------------------------------------------------------------------------------------
// API

class ApiError extends Error {
  // status 0: found by the page itself, or a network failure.
  constructor(status, message, details = []) {
    super(message);
    this.status = status;
    this.details = details;
  }
}

function apiKey() {
  return $("api-key").value.trim();
}

// Reads the gateway's error body {"error": {"status", "message", "errors": [...]}} when there is one.
async function errorOf(response) {
  let error = null;
  try {
    error = (await response.json()).error;
  } catch {
    // not JSON (a proxy's error page, say): fall back to the status line
  }
  return new ApiError(
    error?.status ?? response.status,
    error?.message || `${response.status} ${response.statusText}`.trim(),
    error?.errors ?? [],
  );
}

// A 401 for the key in the field now shows the banner at the top, whichever request got it (an answer for a
// key the user has since changed is old news and shows nothing there).
function reportUnauthorized(err, key) {
  if (err.status === 401 && key === apiKey()) showError("global", err);
}

async function api(path, { json, ...options } = {}) {
  const headers = { ...(options.headers ?? {}) };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "cannot reach the gateway (is it running?)");
  }
  if (!response.ok) {
    const err = await errorOf(response);
    reportUnauthorized(err, key);
    throw err;
  }
  return response;
}

// ---------------------------------------------------------------------------------------------------------
// Messages: one status line (role=status) and one error box (role=alert) per section

function setStatus(section, state, text) {
  const el = $(`${section}-status`);
  el.dataset.state = state;
  el.textContent = text;
}

function showError(section, err) {
  const box = $(`${section}-error`);
  box.replaceChildren();
  if (!err) {
    box.hidden = true;
    return;
  }
  const title = document.createElement("p");
  const prefix = err.status ? `Error ${err.status}: ` : "";
  title.textContent = prefix + (err.message || String(err));
  box.append(title);
  // A 422 lists each invalid field, e.g. the valid speaker names; show them all, not only the summary.
  if (err.details?.length > 1) {
    const list = document.createElement("ul");
    for (const detail of err.details) {
      const item = document.createElement("li");
      item.textContent = detail.loc ? `${detail.loc}: ${detail.message}` : detail.message;
      list.append(item);
    }
    box.append(list);
  }
  if (err.status === 401) {
    const hint = document.createElement("p");
    hint.textContent = "This gateway needs an API key: enter it at the top of the page.";
    box.append(hint);
  }
  box.hidden = false;
}

// ---------------------------------------------------------------------------------------------------------
// Audio: PCM16 chunks scheduled back to back into one AudioContext, with a live waveform

let audioContext = null;

// Created (or resumed) from a click handler: browsers keep audio silent until the user interacts.
function unlockAudio() {
  audioContext ??= new AudioContext();
  if (audioContext.state === "suspended") audioContext.resume();
  return audioContext;
}

// Raw PCM s16le bytes -> float samples; DataView, because the bytes need not be 2-byte aligned.
function pcm16ToFloat(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const samples = new Float32Array(bytes.byteLength >> 1);
  for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(i * 2, true) / 32768;
  return samples;
}

function floatToPcm16(samples) {
  const bytes = new Uint8Array(samples.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(i * 2, s < 0 ? s * 32768 : s * 32767, true);
  }
  return bytes;
}

function wavBlob(parts, sampleRate) {
  const dataBytes = parts.reduce((sum, part) => sum + part.byteLength, 0);
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  header.setUint32(4, 36 + dataBytes, true);
  text(8, "WAVE");
  text(12, "fmt ");
  header.setUint32(16, 16, true); // fmt chunk size
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true); // bytes per second
  header.setUint16(32, 2, true); // bytes per frame
  header.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  header.setUint32(40, dataBytes, true);
  return new Blob([header, ...parts], { type: "audio/wav" });
}

class StreamPlayer {
  constructor(canvas) {
    this.canvas = canvas;
    this.sources = new Set();
    this.parts = [];
    this.sampleRate = 24000;
    this.drawing = false;
    this.accepting = false;
    this.drawFlat();
  }

  // A new utterance: silence the previous one and keep the PCM for the download link.
  begin(sampleRate) {
    this.stop();
    const ctx = unlockAudio();
    if (!this.analyser) {
      this.analyser = ctx.createAnalyser();
      this.analyser.fftSize = 2048;
      this.analyser.connect(ctx.destination);
    }
    this.sampleRate = sampleRate;
    this.parts = [];
    this.nextTime = 0;
    this.accepting = true;
  }

  push(bytes) {
    // After Stop, chunks already on the wire are dropped rather than played.
    if (!this.accepting || bytes.byteLength < 2) return;
    const ctx = audioContext;
    const samples = pcm16ToFloat(bytes);
    // The buffer keeps the stream's own rate; the AudioContext resamples to the device's.
    const buffer = ctx.createBuffer(1, samples.length, this.sampleRate);
    buffer.copyToChannel(samples, 0);
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.analyser);
    // Back to back; when generation fell behind playback, restart just ahead of "now" (a short gap,
    // never overlapping audio).
    const startAt = Math.max(this.nextTime, ctx.currentTime + LEAD_S);
    source.start(startAt);
    this.nextTime = startAt + buffer.duration;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
    this.parts.push(bytes);
    stats.chunks += 1;
    stats.samples += samples.length;
    this.animate();
  }

  stop() {
    this.accepting = false;
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        // already ended
      }
    }
    this.sources.clear();
  }

  get duration() {
    return this.parts.reduce((sum, part) => sum + part.byteLength, 0) / 2 / this.sampleRate;
  }

  wav() {
    return wavBlob(this.parts, this.sampleRate);
  }

  // The canvas backing store follows its CSS size, so lines stay sharp on any screen.
  fitCanvas() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(this.canvas.clientWidth * ratio);
    const height = Math.round(this.canvas.clientHeight * ratio);
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
  }

  drawLine(data) {
    this.fitCanvas();
    const g = this.canvas.getContext("2d");
    const { width, height } = this.canvas;
    const style = getComputedStyle(this.canvas);
    g.clearRect(0, 0, width, height);
    g.lineWidth = Math.max(1, window.devicePixelRatio || 1) * 1.5;
    g.strokeStyle = style.color;
    g.beginPath();
    for (let i = 0; i < data.length; i++) {
      const x = (i / (data.length - 1)) * width;
      const y = (0.5 - data[i] * 0.45) * height;
      if (i === 0) g.moveTo(x, y);
      else g.lineTo(x, y);
    }
    g.stroke();
  }

  drawFlat() {
    this.drawLine(new Float32Array(2));
  }

  // Redraw every frame while anything is scheduled, then settle on a flat line and stop the loop.
  animate() {
    if (this.drawing) return;
    this.drawing = true;
    const data = new Float32Array(this.analyser.fftSize);
    const frame = () => {
      const playing = this.sources.size > 0 && audioContext.currentTime < this.nextTime + 0.05;
      if (!playing) {
        this.drawing = false;
        this.drawFlat();
        return;
      }
      this.analyser.getFloatTimeDomainData(data);
      this.drawLine(data);
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }
}

function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// ---------------------------------------------------------------------------------------------------------
// Streaming transports. Both call player.begin() on the first sign of audio and push() per chunk, and
// resolve with {finish_reason, chunks} when the gateway says it is done.

// WebSocket: {"type": "start"} -> binary PCM frames -> {"type": "done"} (or {"type": "error"}).
function streamWebSocket(request, player, onChunk, cancelRef) {
  const url = new URL("/ws/synthesize", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  // Browsers cannot set headers on a WebSocket; the gateway accepts the key as a query parameter.
  const key = apiKey();
  if (key) url.searchParams.set("api_key", key);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    let chunks = 0;
    cancelRef.cancel = () => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "cancel" }));
      else ws.close();
    };
    ws.onopen = () => ws.send(JSON.stringify({ ...request, stream_format: "binary" }));
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") {
        player.push(new Uint8Array(event.data));
        onChunk(++chunks);
        return;
      }
      const message = JSON.parse(event.data);
      if (message.type === "start") {
        player.begin(message.sample_rate);
      } else if (message.type === "done") {
        resolve({ finish_reason: message.finish_reason, chunks });
        ws.close();
      } else if (message.type === "error") {
        const err = new ApiError(message.status, message.message, message.errors);
        reportUnauthorized(err, key);
        reject(err);
        ws.close();
      }
    };
    // Runs after done/error too; a settled promise ignores the second outcome.
    ws.onclose = (event) =>
      reject(new ApiError(0, `the connection closed before the audio finished (code ${event.code})`));
  });
}

// HTTP: one JSON line per chunk {type: "chunk", sequence, audio (base64 PCM16), sample_rate, is_last,
// finish_reason}, then (newer gateways) {type: "done", finish_reason, ...}; an error after the first line
// arrives as a line {"error": {...}}. Lines of other types are skipped, so additions do not break the page.
async function streamNdjson(request, player, onChunk, cancelRef) {
  const controller = new AbortController();
  cancelRef.cancel = () => controller.abort();
  const response = await api("/synthesize/stream", {
    method: "POST",
    json: { ...request, stream_format: "ndjson" },
    signal: controller.signal,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  let chunks = 0;
  let finishReason = "";
  const handle = (line) => {
    if (!line.trim()) return;
    const message = JSON.parse(line);
    if (message.error) throw new ApiError(message.error.status, message.error.message, message.error.errors);
    if (message.type === "done") {
      finishReason = message.finish_reason;
      return;
    }
    if (typeof message.audio !== "string") return;
    if (chunks === 0) player.begin(message.sample_rate);
    player.push(base64ToBytes(message.audio));
    onChunk(++chunks);
    if (message.is_last) finishReason ||= message.finish_reason;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      // Network reads split lines anywhere: keep the unfinished tail for the next read.
      const lines = (pending + value).split("\n");
      pending = lines.pop();
      lines.forEach(handle);
    }
    handle(pending);
  } catch (err) {
    if (err.name === "AbortError") return { finish_reason: "cancelled", chunks };
    throw err;
  }
  return { finish_reason: finishReason || "unknown", chunks };
}

// ---------------------------------------------------------------------------------------------------------
// Catalog: timbres, languages, library voices

const speakerInfo = new Map();

function titleCase(name) {
  return name.replace(/_/g, " ").replace(/\b\w/g, (c) => c.toUpperCase());
}

function option(value, label) {
  const el = document.createElement("option");
  el.value = value;
  el.textContent = label;
  return el;
}

// Counts catalog loads: a key typed while one is under way starts another, and only the last one counts.
let catalogLoads = 0;

async function loadCatalog() {
  const load = ++catalogLoads;
  showError("global", null);
  try {
    const [speakers, languages, voices] = await Promise.all([
      api("/speakers").then((r) => r.json()),
      api("/languages").then((r) => r.json()),
      api("/voices").then((r) => r.json()),
    ]);
    if (load !== catalogLoads) return;
    fillLanguages(languages.languages);
    fillVoices(speakers.speakers, voices.voices);
  } catch (err) {
    if (load !== catalogLoads) return;
    if (err.status !== 401) showError("global", err); // a 401 is on the banner already
    showCatalogHint(err);
  }
}

// Empty lists say why they are empty, and what to do about it.
function catalogHint(err, what) {
  if (err.status !== 401) return `${what} could not be loaded (see the message at the top)`;
  const whose = apiKey() ? "a valid" : "your";
  return `Enter ${whose} API key to load ${what.toLowerCase()}`;
}

function placeholder(text) {
  const el = option("", text);
  el.disabled = true;
  el.selected = true;
  return el;
}

function showCatalogHint(err) {
  $("voice").replaceChildren(placeholder(catalogHint(err, "Voices")));
  for (const id of ["language", "design-language"]) {
    $(id).replaceChildren(placeholder(catalogHint(err, "Languages")));
  }
  speakerInfo.clear();
  $("voice-description").textContent = "";
  const item = document.createElement("li");
  item.className = "hint";
  item.textContent = `${catalogHint(err, "Your voices")}.`;
  $("voice-list").replaceChildren(item);
}

function fillLanguages(languages) {
  for (const id of ["language", "design-language"]) {
    const select = $(id);
    const previous = select.value || "auto";
    select.replaceChildren(...languages.map((lang) => option(lang.code, lang.name)));
    select.value = previous;
  }
}

function fillVoices(speakers, voices) {
  const select = $("voice");
  const previous = select.value;
  const premium = document.createElement("optgroup");
  premium.label = "Premium voices";
  premium.id = "premium-voices";
  speakerInfo.clear();
  for (const speaker of speakers) {
    speakerInfo.set(speaker.name, speaker);
    premium.append(option(speaker.name, `${titleCase(speaker.name)} (${titleCase(speaker.native_language)})`));
  }
  const cloned = document.createElement("optgroup");
  cloned.label = "Your cloned voices";
  cloned.id = "cloned-voices";
  for (const voice of voices) cloned.append(option(voice.voice, voice.name || voice.voice));
  select.replaceChildren(premium, ...(voices.length ? [cloned] : []));
  if (previous && [...select.options].some((o) => o.value === previous)) select.value = previous;
  onVoiceChange();
  fillLibrary(voices);
}

function onVoiceChange() {
  const speaker = speakerInfo.get($("voice").value);
  $("voice-description").textContent = speaker
    ? speaker.description + (speaker.dialect ? ` Dialect: ${titleCase(speaker.dialect)}.` : "")
    : "A voice from your library (cloned).";
  // The gateway takes style instructions for the built-in timbres only.
  $("instruct").disabled = !speaker;
}

function fillLibrary(voices) {
  const list = $("voice-list");
  if (!voices.length) {
    const empty = document.createElement("li");
    empty.className = "hint";
    empty.textContent = "No saved voices yet.";
    list.replaceChildren(empty);
    return;
  }
  list.replaceChildren(
    ...voices.map((voice) => {
      const item = document.createElement("li");
      const label = document.createElement("span");
      label.textContent = `${voice.name || "Unnamed"} · ${voice.duration_s.toFixed(1)} s · ${voice.voice}`;
      const use = document.createElement("button");
      use.type = "button";
      use.className = "secondary";
      use.textContent = "Use";
      use.setAttribute("aria-label", `Speak with ${voice.name || voice.voice}`);
      use.onclick = () => {
        $("voice").value = voice.voice;
        onVoiceChange();
        $("text").focus();
      };
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "secondary danger";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", `Delete ${voice.name || voice.voice}`);
      remove.onclick = () => deleteVoice(voice);
      item.append(label, use, remove);
      return item;
    }),
  );
}

async function deleteVoice(voice) {
  if (!window.confirm(`Delete the voice "${voice.name || voice.voice}"?`)) return;
  try {
    await api(`/voices/${voice.id}`, { method: "DELETE" });
    setStatus("clone", "done", `Deleted ${voice.name || voice.voice}.`);
    await loadCatalog();
  } catch (err) {
    showError("clone", err);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Speak

const speakPlayer = new StreamPlayer($("speak-wave"));
const speakCancel = { cancel: null };
let speakUrl = null;

// Sampling fields shared by Speak and Design; empty means the model's default.
function sampling() {
  const fields = {};
  const seed = $("seed").value.trim();
  const frames = $("max-new-tokens").value.trim();
  if (seed) fields.seed = Number(seed);
  if (frames) fields.max_new_tokens = Number(frames);
  return fields;
}

function updateCounter() {
  const length = $("text").value.length;
  const counter = $("text-count");
  const over = length > config.max_text_length;
  counter.textContent = `${length} / ${config.max_text_length} characters${over ? " — over the limit" : ""}`;
  counter.classList.toggle("over", over);
}

function setDownload(id, blob, previousUrl) {
  if (previousUrl) URL.revokeObjectURL(previousUrl);
  const link = $(id);
  const url = URL.createObjectURL(blob);
  link.href = url;
  link.hidden = false;
  return url;
}

async function speak(event) {
  event.preventDefault();
  showError("speak", null);
  const text = $("text").value;
  if (!text.trim()) {
    setStatus("speak", "error", "Nothing to say.");
    showError("speak", new ApiError(0, "Type some text to speak."));
    $("text").focus();
    return;
  }
  if (!$("voice").value) {
    setStatus("speak", "error", "No voice.");
    const why = $("voice").selectedOptions[0]?.textContent || "Choose a voice first.";
    showError("speak", new ApiError(0, why));
    return;
  }
  const request = { text, voice: $("voice").value, language: $("language").value, ...sampling() };
  const instruct = $("instruct").value.trim();
  if (instruct && !$("instruct").disabled) request.instruct = instruct;

  unlockAudio(); // inside the click: the browser lets audio start now
  speakPlayer.stop();
  $("speak").disabled = true;
  $("stop").disabled = false;
  $("speak-download").hidden = true;
  $("speak-form").setAttribute("aria-busy", "true");
  stats.requests += 1;
  setStatus("speak", "connecting", "Connecting…");
  const started = performance.now();
  let firstAudioMs = null;
  const onChunk = (count) => {
    firstAudioMs ??= Math.round(performance.now() - started);
    setStatus("speak", "streaming", `Speaking… ${count} chunk${count > 1 ? "s" : ""} (first audio after ${firstAudioMs} ms)`);
  };
  const transport = $("transport").value === "ndjson" ? streamNdjson : streamWebSocket;
  try {
    const result = await transport(request, speakPlayer, onChunk, speakCancel);
    const seconds = speakPlayer.duration.toFixed(2);
    const latency = firstAudioMs === null ? "" : `, first audio after ${firstAudioMs} ms`;
    const [state, word] = result.finish_reason === "cancelled" ? ["stopped", "Stopped"] : ["done", "Done"];
    const summary = `${seconds} s of audio in ${result.chunks} chunks (${result.finish_reason}${latency})`;
    setStatus("speak", state, `${word}: ${summary}.`);
    if (speakPlayer.parts.length) speakUrl = setDownload("speak-download", speakPlayer.wav(), speakUrl);
  } catch (err) {
    speakPlayer.stop();
    setStatus("speak", "error", "Failed.");
    showError("speak", err);
  } finally {
    speakCancel.cancel = null;
    $("speak").disabled = false;
    $("stop").disabled = true;
    $("speak-form").removeAttribute("aria-busy");
  }
}

function stopSpeaking() {
  speakCancel.cancel?.();
  speakPlayer.stop();
}

// ---------------------------------------------------------------------------------------------------------
// Clone: a clip (recorded or uploaded) -> POST /voices (multipart) -> the voice library

let clip = null; // {blob, filename, duration (s) or null when this browser cannot decode it}
let recorder = null;
let previewUrl = null;

// Length and samples of any clip the browser can decode, at 24 kHz (the rate the gateway uses).
async function decodeClip(blob) {
  const context = new OfflineAudioContext(1, 1, 24000);
  return context.decodeAudioData(await blob.arrayBuffer());
}

// As the gateway writes sizes in its 413s (errors.human_bytes): "1000 bytes", "48.8 KiB", "20 MiB".
function humanBytes(count) {
  for (const [unit, scale] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]]) {
    if (count >= scale) return `${(count / scale).toFixed(1).replace(/\.0$/, "")} ${unit}`;
  }
  return `${count} bytes`;
}

function tooShort(duration) {
  return duration !== null && duration < config.min_ref_audio_seconds;
}

function tooLong(duration) {
  return duration !== null && duration > config.max_ref_audio_seconds;
}

function setClip(blob, filename, duration) {
  clip = { blob, filename, duration };
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(blob);
  $("clone-preview").src = previewUrl;
  $("clone-preview").hidden = false;
  const length = duration === null ? "length unknown here; the server will check it" : `${duration.toFixed(1)} s`;
  $("clone-clip").textContent = `Clip: ${filename} (${length}).`;
  showError("clone", null);
  setStatus("clone", "idle", "");
  const min = config.min_ref_audio_seconds;
  if (tooShort(duration)) {
    showError("clone", new ApiError(0,
      `This clip is ${duration.toFixed(1)} s long; a voice needs at least ${min} s of speech. ` +
      "Record or choose a longer clip."));
  } else if (tooLong(duration)) {
    showError("clone", new ApiError(0,
      `This clip is ${duration.toFixed(1)} s long; the limit is ${config.max_ref_audio_seconds} s. Trim it first.`));
  } else if (blob.size > config.max_upload_bytes) {
    showError("clone", new ApiError(0,
      `This file is ${humanBytes(blob.size)}; the limit is ${humanBytes(config.max_upload_bytes)}. Trim it first.`));
  }
  $("clone-save").disabled = tooShort(duration) || tooLong(duration) || blob.size > config.max_upload_bytes;
}

let fileChoice = 0;  // counts choices, so a slow decode of an earlier file cannot overwrite a later one

async function onFileChosen() {
  const file = $("clone-file").files[0];
  if (!file) return;
  const choice = ++fileChoice;
  // The previous clip's verdict must not stand while this one is read (decoding a large file takes seconds).
  showError("clone", null);
  $("clone-save").disabled = true;
  let duration = null;
  // A file over the upload limit is refused whatever it holds: no reason to decode it first.
  if (file.size <= config.max_upload_bytes) {
    setStatus("clone", "reading", `Reading ${file.name}…`);
    try {
      duration = (await decodeClip(file)).duration;
    } catch {
      // a format this browser cannot decode: upload it anyway and let the gateway judge it
    }
  }
  if (choice !== fileChoice) return;
  setClip(file, file.name, duration);
}

async function toggleRecording() {
  if (recorder?.state === "recording") {
    recorder.stop();
    return;
  }
  showError("clone", null);
  // getUserMedia exists only in secure contexts: HTTPS, or a page served from localhost.
  if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
    showError("clone", new ApiError(0,
      "Recording needs a browser with microphone access over HTTPS (or localhost). Upload a file instead."));
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showError("clone", new ApiError(0, `The microphone is not available: ${err.message || err.name}.`));
    return;
  }
  const pieces = [];
  recorder = new MediaRecorder(stream);
  const started = performance.now();
  const timer = setInterval(() => {
    const seconds = (performance.now() - started) / 1000;
    $("record-time").textContent = `${seconds.toFixed(1)} s`;
    // Stop at the gateway's maximum rather than record something it would refuse.
    if (seconds >= config.max_ref_audio_seconds && recorder.state === "recording") recorder.stop();
  }, 100);
  recorder.ondataavailable = (event) => pieces.push(event.data);
  recorder.onstop = async () => {
    clearInterval(timer);
    stream.getTracks().forEach((track) => track.stop());
    $("record").textContent = "Record";
    $("record").setAttribute("aria-pressed", "false");
    await useRecording(new Blob(pieces, { type: recorder.mimeType }));
  };
  recorder.start();
  $("record").textContent = "Stop recording";
  $("record").setAttribute("aria-pressed", "true");
  setStatus("clone", "recording", `Recording… speak for at least ${config.min_ref_audio_seconds} s.`);
}

// MediaRecorder gives WebM or Ogg Opus, which the gateway may not read: send it as 24 kHz WAV instead.
async function useRecording(blob) {
  try {
    const audio = await decodeClip(blob);
    const wav = wavBlob([floatToPcm16(audio.getChannelData(0))], audio.sampleRate);
    setClip(wav, "recording.wav", audio.duration);
  } catch {
    showError("clone", new ApiError(0, "Could not read the recording; try again or upload a file."));
  }
}

async function saveVoice(event) {
  event.preventDefault();
  if (!clip) {
    showError("clone", new ApiError(0, "Record or choose a clip first."));
    return;
  }
  const form = new FormData();
  form.append("ref_audio", clip.blob, clip.filename);
  const name = $("clone-name").value.trim();
  const refText = $("clone-ref-text").value.trim();
  if (name) form.append("name", name);
  if (refText) form.append("ref_text", refText);
  form.append("x_vector_only", $("clone-xvector").checked ? "true" : "false");
  showError("clone", null);
  $("clone-save").disabled = true;
  setStatus("clone", "working", "Uploading and encoding the voice…");
  try {
    const voice = await (await api("/voices", { method: "POST", body: form })).json();
    // "done" only once the voice is listed and selected, as the status says (it is saved either way).
    let selected = " It is now selected under Speak.";
    try {
      await loadCatalog();
      $("voice").value = voice.voice;
      onVoiceChange();
    } catch {
      selected = " Reload the page to pick it under Speak.";
    }
    setStatus("clone", "done", `Saved "${voice.name || voice.voice}" as ${voice.voice}.${selected}`);
  } catch (err) {
    setStatus("clone", "error", "Not saved.");
    showError("clone", err);
  } finally {
    $("clone-save").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Design: POST /design returns the whole utterance; raw PCM goes through the same player

const designPlayer = new StreamPlayer($("design-wave"));
let designUrl = null;

async function design(event) {
  event.preventDefault();
  showError("design", null);
  const instruct = $("design-instruct").value.trim();
  const text = $("design-text").value.trim();
  if (!instruct || !text) {
    showError("design", new ApiError(0, "Describe the voice and type some text."));
    return;
  }
  unlockAudio();
  $("design").disabled = true;
  $("design-keep").hidden = true;
  $("design-download").hidden = true;
  setStatus("design", "working", "Designing the voice…");
  try {
    const request = { text, instruct, language: $("design-language").value, response_format: "pcm", ...sampling() };
    const response = await api("/design", { method: "POST", json: request });
    const rate = Number(response.headers.get("X-Sample-Rate")) || 24000;
    designPlayer.begin(rate);
    designPlayer.push(new Uint8Array(await response.arrayBuffer()));
    setStatus("design", "done", `Done: ${designPlayer.duration.toFixed(2)} s of audio.`);
    designUrl = setDownload("design-download", designPlayer.wav(), designUrl);
    $("design-keep").hidden = false;
  } catch (err) {
    setStatus("design", "error", "Failed.");
    showError("design", err);
  } finally {
    $("design").disabled = false;
  }
}

// Designed speech makes a good clone reference: its transcript is known exactly.
function keepDesigned() {
  setClip(designPlayer.wav(), "designed.wav", designPlayer.duration);
  $("clone-ref-text").value = $("design-text").value.trim();
  $("clone-name").value ||= $("design-instruct").value.trim().slice(0, 100);
  $("clone-title").scrollIntoView({ behavior: "smooth" });
  $("clone-name").focus();
}

// ---------------------------------------------------------------------------------------------------------
// Start-up

async function loadConfig() {
  try {
    Object.assign(config, await (await fetch("/playground/config")).json());
  } catch {
    // keep the defaults
  }
  for (const el of document.querySelectorAll(".min-seconds")) el.textContent = config.min_ref_audio_seconds;
  for (const el of document.querySelectorAll(".max-seconds")) el.textContent = config.max_ref_audio_seconds;
  if (config.auth_required) {
    $("api-key-hint").textContent = "Required here. Saved in this browser (localStorage), sent as a Bearer token.";
  }
  updateCounter();
}

function onKeyChange() {
  const key = apiKey();
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  loadCatalog();
}

function init() {
  $("api-key").value = localStorage.getItem(KEY_STORAGE) ?? "";
  $("api-key").addEventListener("change", onKeyChange);
  $("api-key-forget").addEventListener("click", () => {
    $("api-key").value = "";
    onKeyChange();
  });
  $("voice").addEventListener("change", onVoiceChange);
  $("text").addEventListener("input", updateCounter);
  $("speak-form").addEventListener("submit", speak);
  $("stop").addEventListener("click", stopSpeaking);
  $("record").addEventListener("click", toggleRecording);
  $("clone-file").addEventListener("change", onFileChosen);
  $("clone-form").addEventListener("submit", saveVoice);
  $("design-form").addEventListener("submit", design);
  $("design-keep").addEventListener("click", keepDesigned);
  window.addEventListener("resize", () => {
    speakPlayer.drawFlat();
    designPlayer.drawFlat();
  });
  updateCounter();
  window.playground.ready = Promise.all([loadConfig(), loadCatalog()]);
}

init();
