/**
 * Voice-agent sessions over the gateway's `/ws/session` (gateway/README.md, "Voice-agent sessions"):
 * send text as an LLM produces it, receive audio as it is spoken.
 *
 * Client -> server JSON text frames: `start` (voice, language, format, stream_format, lookahead_tokens,
 * sampling), `text` (a fragment, optional `flush`), `flush`, `end` (optional last fragment), `cancel`.
 * Server -> client: `started`, audio (binary frames, or `chunk` messages with base64 when
 * `stream_format` is `json`), then `done` (finish_reason, duration, chunks, sample_rate, text_chars) or
 * an `error` event — `fatal: true` ends the session, `fatal: false` refuses one message only.
 *
 * Every `start` carries an id (`session.startId`, random) that the gateway echoes on the session's events
 * (gateway/README.md, "Message ids on WebSockets"); an event marked for another start is ignored.
 *
 * WebSocket: the global `WebSocket` (browsers, React Native, Node 22+; the API key then goes in
 * `?api_key=`, as browsers cannot set headers) or, on Node, the `ws` package with an `Authorization`
 * header. A `webSocketFactory` option replaces both.
 */

import { SAMPLE_RATE, base64ToBytes, concatBytes, concatSamples } from "./audio.js";
import {
  APIConnectionError,
  APITimeoutError,
  APIUserAbortError,
  Qwen3TTSError,
  ServiceUnavailableError,
  errorFromEvent,
  errorFromResponse,
  type RequestContext,
} from "./errors.js";
import { parseRetryAfter } from "./retry.js";
import { samplingFields } from "./wire.js";
import { StreamSamples } from "./streams.js";
import type { AudioChunk, FinishReason, SamplingOptions, StreamFormat } from "./types.js";
import { STREAM_FORMATS } from "./types.js";

export const SESSION_PATH = "/ws/session";
export const MAX_LOOKAHEAD_TOKENS = 64;
/** WebSocket close codes that mean "the service is restarting, come back": 1012 service restart, 1013 try
 * again later. */
export const RESTART_CLOSE_CODES: ReadonlySet<number> = new Set([1012, 1013]);

/** The part of the WHATWG WebSocket that sessions use (the `ws` package has it too). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // `any`: the event types differ between the DOM, React Native and `ws`; each listener reads what it needs.
  addEventListener(type: string, listener: (event: any) => void): void;
}

/** Opens a socket to `url` (which already carries `?api_key=` when a key is set); `headers` has the key too. */
export type WebSocketFactory = (url: string, headers: Record<string, string>) => WebSocketLike | Promise<WebSocketLike>;

export interface SessionOptions extends SamplingOptions {
  /** A timbre (`ryan`) or `qwen3-clone-<id>`. */
  voice: string;
  language?: string;
  /** Style instruction (built-in timbres only). */
  instruct?: string;
  /** An optional first fragment. */
  text?: string;
  /** pcm (default; chunks carry samples), wav, mp3 or opus (chunks carry the encoded bytes). */
  format?: StreamFormat;
  /** Ask for JSON `chunk` messages (base64) instead of binary frames. */
  jsonChunks?: boolean;
  /** 0-64 text tokens kept ahead of the voice: more gives better prosody, later audio. */
  lookaheadTokens?: number;
  /** Aborting closes the socket (the gateway cancels the session) and rejects pending reads. */
  signal?: AbortSignal;
  /**
   * Milliseconds the gateway may keep you waiting: to open the session and answer `started`, then from
   * the first message you send that it has not answered yet (later sends do not restart the clock) to its
   * next message, and after `end()` / `cancel()` between any two of its messages until `done`. A quiet
   * time while you send nothing and the gateway owes nothing is not a timeout (the gateway ends a session
   * idle both ways by itself, with `done` / `idle_timeout`). Expiry rejects the waiting read with
   * `APITimeoutError` and closes the session.
   */
  timeoutMs?: number;
}

/** The `started` event. */
export interface SessionStarted {
  sessionId: string;
  sampleRate: number;
  format: StreamFormat;
  streamFormat: "binary" | "json";
  voice: string;
}

/** The `done` event. */
export interface SessionSummary {
  sessionId: string;
  finishReason: FinishReason;
  /** Seconds of audio. */
  duration: number;
  chunks: number;
  sampleRate: number;
  textChars: number;
}

export type SessionEvent =
  | { type: "audio"; chunk: AudioChunk }
  | { type: "refused"; error: Qwen3TTSError }
  | { type: "done"; summary: SessionSummary };

type Incoming =
  | { kind: "message"; data: unknown }
  | { kind: "close"; code: number; reason: string }
  | { kind: "error"; message: string }
  | { kind: "refused"; error: Qwen3TTSError }
  | { kind: "abort" };

/**
 * The HTTP answer a server gave instead of the WebSocket upgrade (the draining gateway's 503 with
 * `Retry-After`, a proxy's 429 or 502), which a factory reports as the socket's `error` event; the session
 * raises that status's typed error, as an HTTP call would. Browsers do not show it: there it is a bare error.
 */
export class HandshakeRefusal extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    readonly headers: Record<string, string>,
    readonly statusText = "",
  ) {
    super(`the server refused the WebSocket upgrade with HTTP ${status}`);
    this.name = "HandshakeRefusal";
  }
}

/** `http(s)://host/prefix` -> `ws(s)://host/prefix/ws/session` (plus `?api_key=` when given). */
export function websocketUrl(baseUrl: string, apiKey: string | null, path: string = SESSION_PATH): string {
  const url = new URL(baseUrl.replace(/\/+$/, "") + path);
  if (url.protocol === "https:") url.protocol = "wss:";
  else if (url.protocol === "http:") url.protocol = "ws:";
  if (apiKey) url.searchParams.set("api_key", apiKey);
  return url.toString();
}

/** The `start` message: only the fields that are set, so the gateway's defaults apply. */
export function sessionStartMessage(options: SessionOptions): Record<string, unknown> {
  const format = options.format ?? "pcm";
  if (!STREAM_FORMATS.includes(format)) {
    throw new RangeError(`format must be one of ${STREAM_FORMATS.join(", ")}, got ${String(format)}`);
  }
  const lookahead = options.lookaheadTokens;
  if (lookahead !== undefined && !(Number.isInteger(lookahead) && lookahead >= 0 && lookahead <= MAX_LOOKAHEAD_TOKENS)) {
    throw new RangeError(`lookaheadTokens must be an integer in 0-${MAX_LOOKAHEAD_TOKENS}, got ${lookahead}`);
  }
  const message: Record<string, unknown> = { type: "start", voice: options.voice, format };
  if (options.language !== undefined) message.language = options.language;
  if (options.instruct !== undefined) message.instruct = options.instruct;
  if (options.text !== undefined) message.text = options.text;
  if (lookahead !== undefined) message.lookahead_tokens = lookahead;
  if (options.jsonChunks) message.stream_format = "json";
  return { ...message, ...samplingFields(options) };
}

function isNode(): boolean {
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof proc?.versions?.node === "string";
}

/** Node: the `ws` package (headers work); elsewhere the global WebSocket (the key rides in the URL). */
export const defaultWebSocketFactory: WebSocketFactory = async (url, headers) => {
  if (isNode()) {
    const { WebSocket: NodeWebSocket } = await import("ws");
    // The header carries the key here: keep it out of the URL, which servers and proxies write to their logs.
    const target = new URL(url);
    if (headers.authorization) target.searchParams.delete("api_key");
    const socket = new NodeWebSocket(target.toString(), { headers, maxPayload: 0 });
    // Read the answer that came instead of the upgrade (ws would report only "Unexpected server response").
    socket.on("unexpected-response", (_request, response) => {
      const parts: Buffer[] = [];
      let reported = false;
      const report = (): void => {
        if (reported) return;
        reported = true;
        const answer: Record<string, string> = {};
        for (const [name, value] of Object.entries(response.headers)) {
          if (value !== undefined) answer[name] = Array.isArray(value) ? value.join(", ") : value;
        }
        const body = Buffer.concat(parts).toString("utf8");
        const refusal = new HandshakeRefusal(response.statusCode ?? 0, body, answer, response.statusMessage ?? "");
        if (socket.listenerCount("error") > 0) socket.emit("error", refusal);
        socket.terminate(); // CONNECTING: aborts the request; then the usual error and close follow
      };
      response.on("data", (part: Buffer) => parts.push(part));
      response.on("end", report);
      response.on("error", report);
    });
    return socket as unknown as WebSocketLike;
  }
  const Global = (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
  if (!Global) throw new Qwen3TTSError("no WebSocket implementation here; pass webSocketFactory");
  return new Global(url);
};

function asBytes(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data) && data.every((part) => ArrayBuffer.isView(part))) {
    // ws with binaryType "fragments"; not what we ask for, but cheap to accept.
    const parts = data as Uint8Array[];
    const joined = new Uint8Array(parts.reduce((sum, part) => sum + part.byteLength, 0));
    let offset = 0;
    for (const part of parts) {
      joined.set(part, offset);
      offset += part.byteLength;
    }
    return joined;
  }
  return null;
}

/** A monotonic clock in milliseconds (wall-clock steps must not fire or stall timeouts). */
function monotonicMs(): number {
  return performance.now();
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * A random id for a session's `start`: 32 hex digits (the gateway takes 1-64 of `A-Za-z0-9._:-`). From
 * `crypto.getRandomValues` where there is one (browsers, also outside secure contexts, and Node), else
 * `Math.random`: the id only tells this client's sessions apart, it guards nothing.
 */
function newStartId(): string {
  const bytes = new Uint8Array(16);
  const crypto = (globalThis as { crypto?: { getRandomValues?: (array: Uint8Array) => Uint8Array } }).crypto;
  if (typeof crypto?.getRandomValues === "function") crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * One session. Open it with `client.session({...})`; send with `sendText` / `flush` / `end` / `cancel`
 * while another task reads `for await (const chunk of session)` (audio chunks, then an empty last chunk
 * with `isLast` and the `finishReason`) or `session.events()` (audio, refused messages, done).
 */
export class SpeechSession implements AsyncIterable<AudioChunk> {
  started: SessionStarted | null = null;
  summary: SessionSummary | null = null;
  /** Messages the gateway refused without ending the session (e.g. text over the limit). */
  readonly refused: Qwen3TTSError[] = [];
  private readonly queue: Incoming[] = [];
  /** The read waiting for the gateway, and the timer that rejects it once the gateway is late. */
  private waiter: { resolve: (item: Incoming) => void; reject: (error: Error) => void } | null = null;
  private waiterTimer: ReturnType<typeof setTimeout> | null = null;
  /** When the gateway began to owe an answer (`monotonicMs`); null while it owes none. */
  private answerOwedSince: number | null = null;
  /** `end` or `cancel` was sent: the gateway owes messages until `done`, so each of its silences counts. */
  private inputClosed = false;
  private gatewayMessages = 0;
  private samples: StreamSamples;
  private sequence = 0;
  private closed = false;
  private finished = false;
  private consuming = false;
  private readonly request: RequestContext;
  private readonly onAbort = (): void => {
    // Audio still buffered is not wanted any more: the next read reports the abort, and the socket
    // closes now (the gateway cancels the session) even while nobody is reading.
    this.queue.length = 0;
    this.push({ kind: "abort" });
    this.close();
  };

  private constructor(
    private readonly socket: WebSocketLike,
    private readonly options: SessionOptions,
    readonly url: string,
    private readonly timeoutMs: number,
    /** The id sent with `start`, which the gateway echoes on every event of this session. */
    readonly startId: string,
  ) {
    this.samples = new StreamSamples(options.format ?? "pcm");
    this.request = { operation: "session", method: "WS", url: url.replace(/api_key=[^&]*/, "api_key=***"), attempt: 0 };
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event: { data: unknown }) => {
      this.onGatewayMessage();
      this.push({ kind: "message", data: event.data });
    });
    socket.addEventListener("close", (event: { code?: number; reason?: string }) => {
      this.closed = true;
      this.push({ kind: "close", code: event.code ?? 1006, reason: event.reason ?? "" });
    });
    socket.addEventListener("error", (event: { message?: string; error?: unknown }) => {
      if (event.error instanceof HandshakeRefusal) {
        this.push({ kind: "refused", error: this.refusalError(event.error) });
        return;
      }
      const cause = event.error instanceof Error ? event.error.message : event.message;
      this.push({ kind: "error", message: cause || "WebSocket error" });
    });
    options.signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  /** Connects and sends `start`; resolves once the gateway answered `started` (else its typed error). */
  static async open(
    url: string,
    headers: Record<string, string>,
    options: SessionOptions,
    factory: WebSocketFactory,
    timeoutMs: number,
  ): Promise<SpeechSession> {
    const startId = newStartId();
    const start = { ...sessionStartMessage(options), id: startId };
    if (options.signal?.aborted) throw new APIUserAbortError("the session was aborted before it opened");
    const session = new SpeechSession(await factory(url, headers), options, url, timeoutMs, startId);
    try {
      await session.waitOpen();
      session.send(start);
      while (!session.onStarted(await session.next())) {
        // an event for another start: the answer to ours is still to come
      }
      return session;
    } catch (error) {
      session.close();
      throw error;
    }
  }

  get sessionId(): string | null {
    return this.started?.sessionId ?? null;
  }

  get sampleRate(): number {
    return this.started?.sampleRate ?? SAMPLE_RATE;
  }

  /** stop, length, repetition, idle_timeout or cancelled, once the session is done. */
  get finishReason(): FinishReason | null {
    return this.summary?.finishReason ?? null;
  }

  // ------------------------------------------------------------------------------- sending

  /** A fragment of any size: a token, half a word, a paragraph. `flush` speaks a partial last word now. */
  sendText(fragment: string, options: { flush?: boolean } = {}): void {
    this.send(options.flush ? { type: "text", text: fragment, flush: true } : { type: "text", text: fragment });
  }

  /** Speak a partial last word now instead of waiting for the next fragment. */
  flush(): void {
    this.send({ type: "flush" });
  }

  /** The text is complete (`text`: an optional last fragment). */
  end(text = ""): void {
    this.send(text ? { type: "end", text } : { type: "end" });
  }

  /**
   * Stop now: the gateway answers `done` with `cancelled`. Idempotent: once the session is over (its `done`
   * or fatal error read, or the connection closed, which cancels it on the gateway) this does nothing, so a
   * barge-in that races the end of the speech never throws.
   */
  cancel(): void {
    if (this.finished || this.closed || this.socket.readyState !== 1) return;
    this.send({ type: "cancel" });
  }

  private send(message: Record<string, unknown>): void {
    if (this.closed || this.socket.readyState !== 1) {
      throw new APIConnectionError("the session's connection is closed", { request: this.request });
    }
    this.socket.send(JSON.stringify(message));
    this.answerOwedSince ??= monotonicMs();
    if (message.type === "end" || message.type === "cancel") this.inputClosed = true;
    this.armWaiterTimer();
  }

  // ------------------------------------------------------------------------------- receiving

  /** Every event until `done`: audio chunks, refused messages, and `done` itself. */
  async *events(): AsyncGenerator<SessionEvent, void, undefined> {
    if (this.consuming) throw new Qwen3TTSError("a session can be read by one consumer at a time");
    this.consuming = true;
    try {
      while (!this.finished) {
        const event = this.onMessage(await this.next());
        if (event) yield event;
      }
    } finally {
      this.consuming = false;
    }
  }

  /** Audio chunks, then an empty chunk with `isLast` and the `finishReason`. */
  async *[Symbol.asyncIterator](): AsyncGenerator<AudioChunk, void, undefined> {
    for await (const event of this.events()) {
      if (event.type === "audio") yield event.chunk;
      else if (event.type === "done") {
        yield this.chunk(new Uint8Array(0), event.summary.finishReason);
      }
    }
  }

  /** Read the rest of a session: all samples (pcm/wav), all bytes, the finish reason. */
  async collect(): Promise<{ samples: Float32Array; data: Uint8Array; sampleRate: number; finishReason: FinishReason | null }> {
    const samples: Float32Array[] = [];
    const data: Uint8Array[] = [];
    for await (const chunk of this) {
      samples.push(chunk.samples);
      data.push(chunk.data);
    }
    return { samples: concatSamples(samples), data: concatBytes(data), sampleRate: this.sampleRate, finishReason: this.finishReason };
  }

  /** Close the connection (an unfinished session is cancelled by the gateway). */
  close(): void {
    this.options.signal?.removeEventListener("abort", this.onAbort);
    if (!this.closed) {
      this.closed = true;
      try {
        this.socket.close(1000);
      } catch {
        // already closing
      }
    }
  }

  // ------------------------------------------------------------------------------- plumbing

  private push(item: Incoming): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = null;
      this.disarmWaiterTimer();
      waiter.resolve(item);
    } else {
      this.queue.push(item);
    }
  }

  /** Any message answers what the client sent; after `end` / `cancel` the next one is owed at once. */
  private onGatewayMessage(): void {
    // `started` answers the start, not the first fragment it may carry: audio for that is still owed.
    const firstFragmentOwed = this.gatewayMessages === 0 && Boolean(this.options.text);
    this.gatewayMessages += 1;
    this.answerOwedSince = this.inputClosed || firstFragmentOwed ? monotonicMs() : null;
  }

  /** The next message (JSON parsed, or bytes); throws for a close, an error, an abort, a timeout. */
  private async next(): Promise<Record<string, unknown> | Uint8Array> {
    const item = this.queue.shift() ?? (await this.wait());
    switch (item.kind) {
      case "message": {
        const bytes = asBytes(item.data);
        if (bytes) return bytes;
        const text = typeof item.data === "string" ? item.data : String(item.data);
        try {
          const payload: unknown = JSON.parse(text);
          if (isRecord(payload)) return payload;
        } catch {
          // reported below
        }
        throw new Qwen3TTSError(`the gateway sent a malformed message: ${text.slice(0, 80)}`, { request: this.request });
      }
      case "abort":
        this.close();
        throw new APIUserAbortError("the session was aborted", { request: this.request });
      case "close":
        this.closed = true;
        if (RESTART_CLOSE_CODES.has(item.code)) {
          // The gateway is restarting or draining (uvicorn closes open sockets with 1012; a draining gateway
          // closes new ones with 1013): a 503 in all but name, which callers handle with the other 503s.
          throw new ServiceUnavailableError(
            `the gateway closed the session (code ${item.code}: ${item.reason || "restarting"}); retry`,
            { status: 503, request: this.request },
          );
        }
        throw new APIConnectionError(
          `the connection closed before the session ended (code ${item.code}${item.reason ? `: ${item.reason}` : ""})`,
          { request: this.request },
        );
      case "error":
        this.close();
        throw new APIConnectionError(`could not talk to the gateway at ${this.request.url}: ${item.message}`, {
          request: this.request,
        });
      case "refused":
        this.close();
        throw item.error;
    }
  }

  /** The typed error of the HTTP status that refused the upgrade, with its message and Retry-After. */
  private refusalError(refusal: HandshakeRefusal): Qwen3TTSError {
    return errorFromResponse(refusal.status, refusal.body, {
      headers: refusal.headers,
      retryAfter: parseRetryAfter(refusal.headers["retry-after"]),
      request: this.request,
      statusText: refusal.statusText,
    });
  }

  private wait(): Promise<Incoming> {
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.armWaiterTimer();
    });
  }

  /** (Re)arm the waiting read's timer for the answer owed longest; none while nothing is owed. */
  private armWaiterTimer(): void {
    this.disarmWaiterTimer();
    const owedSince = this.answerOwedSince;
    if (!this.waiter || owedSince === null || !(this.timeoutMs > 0 && Number.isFinite(this.timeoutMs))) return;
    const leftMs = Math.max(0, owedSince + this.timeoutMs - monotonicMs());
    this.waiterTimer = setTimeout(() => {
      this.waiterTimer = null;
      const waiter = this.waiter;
      this.waiter = null;
      this.close();
      waiter?.reject(new APITimeoutError(`no answer from the gateway within ${this.timeoutMs} ms`, { request: this.request }));
    }, leftMs);
  }

  private disarmWaiterTimer(): void {
    if (this.waiterTimer !== null) clearTimeout(this.waiterTimer);
    this.waiterTimer = null;
  }

  private waitOpen(): Promise<void> {
    if (this.socket.readyState === 1) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (error?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) reject(error);
        else resolve();
      };
      const timer = setTimeout(
        () => settle(new APITimeoutError(`could not open ${this.request.url} within ${this.timeoutMs} ms`, { request: this.request })),
        this.timeoutMs > 0 && Number.isFinite(this.timeoutMs) ? this.timeoutMs : 2 ** 31 - 1,
      );
      this.socket.addEventListener("open", () => settle());
      // Until open, failures are reported by the first read; here they only end the wait. Once open,
      // they are left in the queue for the reads.
      const failed = (): void => {
        if (settled) return;
        const item = this.queue.find((queued) => queued.kind !== "message");
        if (!item) return;
        this.queue.splice(this.queue.indexOf(item), 1);
        settle(
          item.kind === "refused"
            ? item.error
            : item.kind === "abort"
            ? new APIUserAbortError("the session was aborted before it opened", { request: this.request })
            : new APIConnectionError(
                `could not open ${this.request.url}: ${item.kind === "error" ? item.message : `closed (code ${item.code})`}`,
                { request: this.request },
              ),
        );
      };
      this.socket.addEventListener("error", () => queueMicrotask(failed));
      this.socket.addEventListener("close", () => queueMicrotask(failed));
      this.options.signal?.addEventListener("abort", () => queueMicrotask(failed), { once: true });
    });
  }

  /**
   * Whether an event belongs to this session: the start id it is marked with (`start_id`, else `id`) is
   * this session's, or it has none (a gateway that sends no ids, or an answer to a message sent without one).
   * Stale answers on a reused socket are marked for another start.
   */
  private ours(message: Record<string, unknown>): boolean {
    const mark = message.start_id ?? message.id;
    return mark === undefined || mark === null || mark === this.startId;
  }

  /** The answer to `start`: true for `started`, false for an event of another start (ignored); throws otherwise. */
  private onStarted(message: Record<string, unknown> | Uint8Array): boolean {
    if (!(message instanceof Uint8Array) && !this.ours(message)) return false;
    if (message instanceof Uint8Array || message.type !== "started") {
      if (!(message instanceof Uint8Array) && message.type === "error") throw errorFromEvent(message, this.request);
      throw new Qwen3TTSError("the gateway did not answer start with started", { request: this.request });
    }
    const format = String(message.format ?? this.options.format ?? "pcm") as StreamFormat;
    this.samples = new StreamSamples(format);
    this.started = {
      sessionId: String(message.session_id ?? ""),
      sampleRate: Number(message.sample_rate ?? SAMPLE_RATE),
      format,
      streamFormat: message.stream_format === "json" ? "json" : "binary",
      voice: String(message.voice ?? this.options.voice),
    };
    return true;
  }

  private chunk(data: Uint8Array, finishReason: FinishReason | null): AudioChunk {
    const isLast = finishReason !== null;
    return {
      sequence: this.sequence++,
      samples: this.samples.push(data),
      data,
      format: this.started?.format ?? "pcm",
      sampleRate: this.sampleRate,
      isLast,
      finishReason,
    };
  }

  private onMessage(message: Record<string, unknown> | Uint8Array): SessionEvent | null {
    if (message instanceof Uint8Array) return { type: "audio", chunk: this.chunk(message, null) };
    if (!this.ours(message)) return null; // an event of another start
    switch (message.type) {
      case "chunk":
        return { type: "audio", chunk: this.chunk(base64ToBytes(String(message.audio ?? "")), null) };
      case "done":
        this.finished = true;
        this.summary = {
          sessionId: String(message.session_id ?? this.sessionId ?? ""),
          finishReason: String(message.finish_reason ?? "unknown"),
          duration: Number(message.duration ?? 0),
          chunks: Number(message.chunks ?? 0),
          sampleRate: Number(message.sample_rate ?? this.sampleRate),
          textChars: Number(message.text_chars ?? 0),
        };
        return { type: "done", summary: this.summary };
      case "error": {
        const error = errorFromEvent(message, this.request);
        if (message.fatal !== false) {
          this.finished = true;
          throw error;
        }
        this.refused.push(error);
        return { type: "refused", error };
      }
      default:
        throw new Qwen3TTSError(`unexpected session message type ${JSON.stringify(message.type)}`, { request: this.request });
    }
  }
}
