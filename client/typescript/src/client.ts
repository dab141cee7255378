/**
 * `Qwen3TTSClient`: the gateway's whole API (the Python `AsyncQwen3TTSClient` in TypeScript), on the
 * standard `fetch` and `WebSocket` (the `ws` package on Node 20).
 *
 * Routes and fields follow gateway/qwen3_tts_gateway/routers and schemas.py: `/synthesize`,
 * `/synthesize/stream` (NDJSON or raw audio), `/clone`, `/design`, `/voices`, `/speakers`, `/languages`,
 * `/health`, `/ready`, `/v1/audio/speech` and `/ws/session`.
 */

import { Transport, parseJson, type FetchLike, type Operation } from "./http.js";
import { RetryPolicy, type RetryPolicyOptions } from "./retry.js";
import { SpeechSession, defaultWebSocketFactory, websocketUrl, type SessionOptions, type WebSocketFactory } from "./session.js";
import { ChunkStream, ndjsonChunks, rawAudioChunks, sseChunks } from "./streams.js";
import type {
  AudioStreamOptions,
  CloneOptions,
  CreateVoiceOptions,
  DesignOptions,
  HealthStatus,
  Language,
  OpenAISpeechParams,
  OutputFormat,
  ReadyStatus,
  RequestOptions,
  SpeakOptions,
  Speaker,
  SpeechResult,
  StreamFormat,
  StreamOptions,
  Voice,
} from "./types.js";
import { STREAM_FORMATS } from "./types.js";
import {
  body,
  checkOutputFormat,
  items,
  parseHealth,
  parseLanguage,
  parseReady,
  parseSpeaker,
  parseSpeech,
  parseVoice,
  referenceAudioBase64,
  voiceFields,
  voicePathId,
} from "./wire.js";

export const VERSION = "0.1.0";
export const ENV_BASE_URL = "QWEN3_TTS_BASE_URL";
export const ENV_API_KEY = "QWEN3_TTS_API_KEY";
export const DEFAULT_BASE_URL = "http://127.0.0.1:8080";
/** A long paragraph on a busy server takes a while. */
export const DEFAULT_TIMEOUT_MS = 120_000;

export interface ClientOptions {
  /** Default: `$QWEN3_TTS_BASE_URL`, else http://127.0.0.1:8080. */
  baseUrl?: string;
  /** Bearer key; default `$QWEN3_TTS_API_KEY` (null: none). */
  apiKey?: string | null;
  /** Milliseconds per attempt (streams: until the response starts, then between reads; sessions: see
   * `SessionOptions.timeoutMs`). */
  timeoutMs?: number;
  /** Retries of 408/429/5xx and connection failures (default 2). Give this or `retryPolicy`, not both. */
  maxRetries?: number;
  /** The retry count and backoff together (its own `maxRetries`); giving `maxRetries` too is a `TypeError`. */
  retryPolicy?: RetryPolicy | RetryPolicyOptions;
  /** Sent with every request. */
  headers?: Record<string, string>;
  /** A fetch of your own (proxies, tests); default the global one. */
  fetch?: FetchLike;
  /** Opens session sockets; default `ws` on Node, the global WebSocket elsewhere. */
  webSocketFactory?: WebSocketFactory;
}

export interface SpeechStreamParams extends OpenAISpeechParams {
  /** audio (default): the encoded bytes as they come; sse: events with base64 bytes and the finish reason. */
  stream_format?: "audio" | "sse";
  response_format?: StreamFormat;
}

function env(name: string): string | undefined {
  const proc = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return proc?.env?.[name] || undefined;
}

function requestOptions(options: RequestOptions): RequestOptions {
  const { signal, timeoutMs, maxRetries, headers } = options;
  return { signal, timeoutMs, maxRetries, headers };
}

/** The client's policy: `retryPolicy`, else the default one with `maxRetries` (default 2). */
function clientRetryPolicy({ maxRetries, retryPolicy }: ClientOptions): RetryPolicy {
  // null as well as undefined means "not given" (plain JavaScript callers), as it did before.
  if (retryPolicy == null) return new RetryPolicy({ maxRetries });
  if (maxRetries != null) {
    // Neither may silently win: a policy has its own maxRetries, which is where the count goes.
    throw new TypeError("give either retryPolicy or maxRetries, not both; set the count in the policy: retryPolicy: { maxRetries }");
  }
  return retryPolicy instanceof RetryPolicy ? retryPolicy : new RetryPolicy(retryPolicy);
}

export class Qwen3TTSClient {
  readonly baseUrl: string;
  readonly apiKey: string | null;
  readonly timeoutMs: number;
  private readonly transport: Transport;
  private readonly webSocketFactory: WebSocketFactory;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? env(ENV_BASE_URL) ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    this.apiKey = options.apiKey === undefined ? (env(ENV_API_KEY) ?? null) : options.apiKey;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const policy = clientRetryPolicy(options);
    const fetchImpl = options.fetch ?? ((input: string, init: RequestInit) => globalThis.fetch(input, init));
    this.transport = new Transport({
      baseUrl: this.baseUrl,
      apiKey: this.apiKey,
      timeoutMs: this.timeoutMs,
      retryPolicy: policy,
      headers: { "user-agent": `qwen3-tts-client-ts/${VERSION}`, ...options.headers },
      fetch: fetchImpl,
    });
    this.webSocketFactory = options.webSocketFactory ?? defaultWebSocketFactory;
  }

  private async speech(op: Operation, format: OutputFormat, options: RequestOptions): Promise<SpeechResult> {
    return parseSpeech(await this.transport.call(op, requestOptions(options)), format);
  }

  // ------------------------------------------------------------------------------------ synthesis

  /** The whole file for `text`: `voice` a timbre or `qwen3-clone-<id>`; `responseFormat` wav (default),
   * flac, mp3, opus or pcm (s16le). */
  async speak(text: string, options: SpeakOptions): Promise<SpeechResult> {
    checkOutputFormat(options.responseFormat);
    const json = body({ ...voiceFields(text, options), response_format: options.responseFormat }, options);
    return this.speech({ name: "speak", method: "POST", path: "/synthesize", json }, options.responseFormat ?? "wav", options);
  }

  /** Chunks as they are generated (NDJSON): float `samples`, s16le `data`, `isLast`/`finishReason` on
   * the last; `stream.summary` holds the closing line once read. */
  stream(text: string, options: StreamOptions): ChunkStream {
    const json = body({ ...voiceFields(text, options), stream_format: "ndjson" }, options);
    const op: Operation = { name: "stream", method: "POST", path: "/synthesize/stream", json, headers: { accept: "application/x-ndjson" } };
    return new ChunkStream(async function* (this: Qwen3TTSClient, stream: ChunkStream, signal: AbortSignal) {
      const response = await this.transport.open(op, { ...requestOptions(options), signal });
      yield* ndjsonChunks(response, (summary) => {
        stream.summary = summary;
      });
    }.bind(this), options.signal);
  }

  /** Raw audio bytes of `format` (pcm default, wav, mp3, opus) as they are encoded; pcm/wav chunks
   * carry `samples` too. The finish reason is not on this wire (use `stream()` for it). */
  streamAudio(text: string, options: AudioStreamOptions): ChunkStream {
    const format = options.format ?? "pcm";
    if (!STREAM_FORMATS.includes(format)) {
      throw new RangeError(`format ${JSON.stringify(format)} cannot be streamed; streamable: ${STREAM_FORMATS.join(", ")}`);
    }
    const json = body({ ...voiceFields(text, options), stream_format: "audio", response_format: format }, options);
    const op: Operation = { name: "streamAudio", method: "POST", path: "/synthesize/stream", json };
    return new ChunkStream(async function* (this: Qwen3TTSClient, _stream: ChunkStream, signal: AbortSignal) {
      yield* rawAudioChunks(await this.transport.open(op, { ...requestOptions(options), signal }), format);
    }.bind(this), options.signal);
  }

  /** Speak `text` in the voice of a reference clip (one-off; `createVoice` saves one to reuse). */
  async clone(text: string, options: CloneOptions): Promise<SpeechResult> {
    checkOutputFormat(options.responseFormat);
    const json = body(
      {
        text,
        ref_audio: referenceAudioBase64(options.referenceAudio),
        ref_text: options.refText,
        x_vector_only: options.xVectorOnly,
        language: options.language,
        response_format: options.responseFormat,
      },
      options,
    );
    return this.speech({ name: "clone", method: "POST", path: "/clone", json }, options.responseFormat ?? "wav", options);
  }

  /** Speak `text` in a voice described in words (`instruct`). */
  async design(text: string, options: DesignOptions): Promise<SpeechResult> {
    checkOutputFormat(options.responseFormat);
    const json = body(
      { text, instruct: options.instruct, language: options.language, response_format: options.responseFormat },
      options,
    );
    return this.speech({ name: "design", method: "POST", path: "/design", json }, options.responseFormat ?? "wav", options);
  }

  // ------------------------------------------------------------------------------------ OpenAI route

  /** `POST /v1/audio/speech`: the whole file (default mp3). */
  async createSpeech(params: OpenAISpeechParams): Promise<SpeechResult> {
    checkOutputFormat(params.response_format);
    return this.speech(
      { name: "createSpeech", method: "POST", path: "/v1/audio/speech", json: this.openaiBody(params, "audio") },
      params.response_format ?? "mp3",
      params,
    );
  }

  /** `POST /v1/audio/speech` as a stream: raw bytes (`stream_format: "audio"`) or SSE events, whose
   * last chunk carries the finish reason. */
  streamSpeech(params: SpeechStreamParams): ChunkStream {
    const format = params.response_format ?? "mp3";
    if (!STREAM_FORMATS.includes(format)) {
      throw new RangeError(`response_format ${JSON.stringify(format)} cannot be streamed; streamable: ${STREAM_FORMATS.join(", ")}`);
    }
    const sse = params.stream_format === "sse";
    const op: Operation = {
      name: "streamSpeech",
      method: "POST",
      path: "/v1/audio/speech",
      json: this.openaiBody({ ...params, response_format: format }, sse ? "sse" : "audio"),
      headers: sse ? { accept: "text/event-stream" } : {},
    };
    return new ChunkStream(async function* (this: Qwen3TTSClient, _stream: ChunkStream, signal: AbortSignal) {
      const response = await this.transport.open(op, { ...requestOptions(params), signal });
      yield* sse ? sseChunks(response, format) : rawAudioChunks(response, format);
    }.bind(this), params.signal);
  }

  private openaiBody(params: OpenAISpeechParams, streamFormat: "audio" | "sse"): Record<string, unknown> {
    return body(
      {
        model: params.model ?? "qwen3-tts",
        input: params.input,
        voice: params.voice,
        instructions: params.instructions,
        response_format: params.response_format,
        speed: params.speed,
        stream_format: streamFormat,
        language: params.language,
      },
      params,
    );
  }

  // ------------------------------------------------------------------------------------ sessions

  /** Opens a voice-agent session (`/ws/session`); resolves once the gateway answered `started`, or
   * rejects with its typed error (422 unknown voice, 404 unknown clone, 401, 503 model not ready). */
  async session(options: SessionOptions): Promise<SpeechSession> {
    const headers: Record<string, string> = this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {};
    return SpeechSession.open(
      websocketUrl(this.baseUrl, this.apiKey),
      headers,
      options,
      this.webSocketFactory,
      options.timeoutMs ?? this.timeoutMs,
    );
  }

  // ------------------------------------------------------------------------------------ voice library

  /** Save a voice from a reference clip (+ transcript); use `voice.voiceId` as the voice. */
  async createVoice(options: CreateVoiceOptions): Promise<Voice> {
    const json = body({
      ref_audio: referenceAudioBase64(options.referenceAudio),
      ref_text: options.refText,
      name: options.name,
      x_vector_only: options.xVectorOnly,
    });
    const op: Operation = { name: "createVoice", method: "POST", path: "/voices", json, idempotent: false };
    const whole = await this.transport.call(op, requestOptions(options));
    return parseVoice(parseJson(whole.body, whole.request), whole.request);
  }

  async listVoices(options: RequestOptions = {}): Promise<Voice[]> {
    const whole = await this.transport.call({ name: "listVoices", method: "GET", path: "/voices" }, requestOptions(options));
    return items(parseJson(whole.body, whole.request), "voices", whole.request).map((v) => parseVoice(v, whole.request));
  }

  /** `voiceId`: the library id or `qwen3-clone-<id>`. */
  async getVoice(voiceId: string, options: RequestOptions = {}): Promise<Voice> {
    const op: Operation = { name: "getVoice", method: "GET", path: `/voices/${voicePathId(voiceId)}` };
    const whole = await this.transport.call(op, requestOptions(options));
    return parseVoice(parseJson(whole.body, whole.request), whole.request);
  }

  async deleteVoice(voiceId: string, options: RequestOptions = {}): Promise<void> {
    const op: Operation = { name: "deleteVoice", method: "DELETE", path: `/voices/${voicePathId(voiceId)}` };
    await this.transport.call(op, requestOptions(options));
  }

  // ------------------------------------------------------------------------------------ catalog, health

  async speakers(options: RequestOptions = {}): Promise<Speaker[]> {
    const whole = await this.transport.call({ name: "speakers", method: "GET", path: "/speakers" }, requestOptions(options));
    return items(parseJson(whole.body, whole.request), "speakers", whole.request).map((s) => parseSpeaker(s, whole.request));
  }

  async languages(options: RequestOptions = {}): Promise<Language[]> {
    const whole = await this.transport.call({ name: "languages", method: "GET", path: "/languages" }, requestOptions(options));
    return items(parseJson(whole.body, whole.request), "languages", whole.request).map((l) => parseLanguage(l, whole.request));
  }

  /** Liveness of the gateway (GET /health); not retried, so it reports the present state. */
  async health(options: RequestOptions = {}): Promise<HealthStatus> {
    const whole = await this.transport.call({ name: "health", method: "GET", path: "/health", retry: false }, requestOptions(options));
    return parseHealth(whole, parseJson(whole.body, whole.request));
  }

  /** Readiness of the gateway, Triton and every model (GET /ready); not ready gives `ok: false`. */
  async ready(options: RequestOptions = {}): Promise<ReadyStatus> {
    const op: Operation = { name: "ready", method: "GET", path: "/ready", retry: false, okStatuses: [503] };
    const whole = await this.transport.call(op, requestOptions(options));
    return parseReady(whole, parseJson(whole.body, whole.request));
  }
}
