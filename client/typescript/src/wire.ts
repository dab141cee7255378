/**
 * Between camelCase options and the gateway's snake_case JSON: request bodies (only the fields that are
 * set, since the gateway forbids unknown fields and applies its own defaults) and parsed responses.
 */

import { bytesToBase64, encodeWav } from "./audio.js";
import { Qwen3TTSError, type RequestContext } from "./errors.js";
import type { WholeResponse } from "./http.js";
import { CLONE_PREFIX } from "./routing.js";
import type {
  FinishReason,
  HealthStatus,
  Language,
  OutputFormat,
  ReadyStatus,
  ReferenceAudio,
  SamplingOptions,
  Speaker,
  SpeechResult,
  Voice,
  VoiceSelection,
} from "./types.js";
import { CONTENT_TYPES, OUTPUT_FORMATS } from "./types.js";

const SAMPLING_NAMES: ReadonlyArray<readonly [keyof SamplingOptions, string]> = [
  ["doSample", "do_sample"],
  ["temperature", "temperature"],
  ["topK", "top_k"],
  ["topP", "top_p"],
  ["repetitionPenalty", "repetition_penalty"],
  ["maxNewTokens", "max_new_tokens"],
  ["seed", "seed"],
];

/** The sampling options that are set, under the gateway's names. */
export function samplingFields(options: SamplingOptions): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const [name, wire] of SAMPLING_NAMES) {
    if (options[name] !== undefined) fields[wire] = options[name];
  }
  return fields;
}

/** A synthesis request's text and voice selection, under the gateway's names (speak and both streams). */
export function voiceFields(text: string, selection: VoiceSelection): Record<string, unknown> {
  return {
    text,
    voice: selection.voice,
    speaker: selection.speaker,
    language: selection.language,
    instruct: selection.instruct,
  };
}

/** `fields` without the undefined ones, plus the sampling options. */
export function body(fields: Record<string, unknown>, sampling: SamplingOptions = {}): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined) result[key] = value;
  }
  return { ...result, ...samplingFields(sampling) };
}

export function checkOutputFormat(format: string | undefined): void {
  if (format !== undefined && !OUTPUT_FORMATS.includes(format as OutputFormat)) {
    throw new RangeError(`unsupported format ${JSON.stringify(format)}; supported: ${OUTPUT_FORMATS.join(", ")}`);
  }
}

/** The base64 of an encoded audio file (samples are written as a 16-bit WAV first). */
export function referenceAudioBase64(audio: ReferenceAudio): string {
  if (audio instanceof Uint8Array) return bytesToBase64(audio);
  if (audio instanceof ArrayBuffer) return bytesToBase64(new Uint8Array(audio));
  if (audio && typeof audio === "object" && "samples" in audio && "sampleRate" in audio) {
    return bytesToBase64(encodeWav(audio.samples, audio.sampleRate));
  }
  throw new TypeError("referenceAudio must be the bytes of an audio file or { samples, sampleRate }");
}

/** A library id from `<id>` or `qwen3-clone-<id>` (what users copy around), safe in a URL path. */
export function voicePathId(voiceId: string): string {
  const id = voiceId.toLowerCase().startsWith(CLONE_PREFIX) ? voiceId.slice(CLONE_PREFIX.length) : voiceId;
  if (!id || /[/?#]/.test(id)) throw new RangeError(`invalid voice id ${JSON.stringify(voiceId)}`);
  return encodeURIComponent(id);
}

function numberHeader(value: string | undefined): number | null {
  if (value === undefined || value === "") return null;
  const parsed = Number(value);
  return Number.isFinite(parsed) ? parsed : null;
}

export function parseSpeech(whole: WholeResponse, format: OutputFormat): SpeechResult {
  const headers = whole.headers;
  return {
    audio: whole.body,
    format,
    contentType: headers["content-type"] ?? CONTENT_TYPES[format],
    sampleRate: numberHeader(headers["x-sample-rate"]),
    duration: numberHeader(headers["x-audio-duration"]),
    finishReason: (headers["x-finish-reason"] || null) as FinishReason | null,
    headers,
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function unexpected(what: string, payload: unknown, request: RequestContext): Qwen3TTSError {
  return new Qwen3TTSError(`unexpected ${what} from the gateway: ${JSON.stringify(payload).slice(0, 120)}`, { request });
}

/** The list in `{key: [...]}`. */
export function items(payload: unknown, key: string, request: RequestContext): unknown[] {
  const list = isRecord(payload) ? payload[key] : undefined;
  if (!Array.isArray(list)) throw unexpected(key, payload, request);
  return list;
}

const optionalString = (value: unknown): string | null => (typeof value === "string" ? value : null);

export function parseVoice(payload: unknown, request: RequestContext): Voice {
  if (!isRecord(payload) || typeof payload.id !== "string" || !payload.id) throw unexpected("voice", payload, request);
  return {
    id: payload.id,
    voiceId: typeof payload.voice === "string" ? payload.voice : CLONE_PREFIX + payload.id,
    name: optionalString(payload.name),
    refText: optionalString(payload.ref_text),
    xVectorOnly: payload.x_vector_only === true,
    durationS: Number(payload.duration_s ?? 0),
    createdAt: Number(payload.created_at ?? 0),
  };
}

export function parseSpeaker(payload: unknown, request: RequestContext): Speaker {
  if (!isRecord(payload) || typeof payload.name !== "string") throw unexpected("speaker", payload, request);
  return {
    name: payload.name,
    description: String(payload.description ?? ""),
    nativeLanguage: String(payload.native_language ?? ""),
    dialect: optionalString(payload.dialect),
  };
}

export function parseLanguage(payload: unknown, request: RequestContext): Language {
  if (!isRecord(payload) || typeof payload.code !== "string") throw unexpected("language", payload, request);
  return { code: payload.code, name: String(payload.name ?? payload.code), iso6391: optionalString(payload.iso_639_1) };
}

/** `/health` answers `{"status": "ok"}`. */
export function parseHealth(whole: WholeResponse, details: unknown): HealthStatus {
  const record = isRecord(details) ? details : { body: details };
  const status = String(record.status ?? (whole.response.ok ? "ok" : "error"));
  return { ok: whole.response.ok && status === "ok", status, details: record };
}

/** `/ready` answers `{"ready", "server", "models"}`, with 503 while not ready. */
export function parseReady(whole: WholeResponse, details: unknown): ReadyStatus {
  const record = isRecord(details) ? details : { body: details };
  const ready = whole.response.ok && record.ready === true;
  const models: Record<string, boolean> = {};
  if (isRecord(record.models)) {
    for (const [name, state] of Object.entries(record.models)) models[name] = state === true;
  }
  return { ok: ready, status: ready ? "ready" : "not ready", details: record, ready, server: record.server === true, models };
}
