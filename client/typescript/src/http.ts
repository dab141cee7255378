/**
 * The HTTP plumbing both the client and the provider use: one `fetch` per attempt, retries with backoff
 * on 408/429/5xx and connection failures (honouring `Retry-After`), a timeout per attempt, the caller's
 * `AbortSignal`, and typed errors that name the request. Streams get the timeout until the response
 * starts and then between reads, so a long stream is never cut while audio keeps coming.
 */

import {
  APIConnectionError,
  APITimeoutError,
  APIUserAbortError,
  Qwen3TTSError,
  errorFromResponse,
  type RequestContext,
} from "./errors.js";
import { RetryPolicy, isSafeToResend, parseRetryAfter } from "./retry.js";
import type { RequestOptions } from "./types.js";

export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface Operation {
  /** The client method, for error context and metrics. */
  name: string;
  method: "GET" | "POST" | "DELETE";
  path: string;
  /** JSON body. */
  json?: unknown;
  headers?: Record<string, string>;
  /** Error statuses that are an answer here, not a failure (GET /ready says "not ready" with a 503). */
  okStatuses?: readonly number[];
  /** Probes report the present state; retrying them only delays the answer. */
  retry?: boolean;
  /** False for a call with a lasting effect (storing a voice): it is sent again only when it cannot have
   * been carried out (`isSafeToResend`), never after a timeout or a 5xx that may have stored it. */
  idempotent?: boolean;
}

export interface TransportConfig {
  baseUrl: string;
  apiKey: string | null;
  timeoutMs: number;
  retryPolicy: RetryPolicy;
  headers: Record<string, string>;
  fetch: FetchLike;
}

export interface WholeResponse {
  response: Response;
  body: Uint8Array;
  headers: Record<string, string>;
  request: RequestContext;
}

export function headersRecord(headers: Headers): Record<string, string> {
  const record: Record<string, string> = {};
  headers.forEach((value, key) => {
    record[key] = value;
  });
  return record;
}

function abortError(request: RequestContext | null): APIUserAbortError {
  return new APIUserAbortError("the request was aborted", { request });
}

/** Resolves after `ms`; rejects with `APIUserAbortError` as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal, request: RequestContext | null = null): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(request));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortError(request));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** What a request was doing when it failed before any answer came. */
const WAITING = "waiting for the response";

/**
 * One attempt's cancellation: the caller's signal and our timeout both abort the same controller, and
 * afterwards we can tell which of them did it.
 */
class AttemptControl {
  readonly controller = new AbortController();
  timedOut = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly onAbort = (): void => this.controller.abort();

  constructor(
    private readonly userSignal: AbortSignal | undefined,
    readonly timeoutMs: number,
  ) {
    userSignal?.addEventListener("abort", this.onAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get userAborted(): boolean {
    return this.userSignal?.aborted ?? false;
  }

  /** (Re)start the timer: until the response starts, then between two reads of a stream. */
  arm(): void {
    this.disarm();
    if (this.timeoutMs > 0 && Number.isFinite(this.timeoutMs)) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.controller.abort();
      }, this.timeoutMs);
    }
  }

  disarm(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Done with this attempt: stop the timer, unhook the caller's signal, abort what is still open. */
  release(abortOpen: boolean): void {
    this.disarm();
    this.userSignal?.removeEventListener("abort", this.onAbort);
    if (abortOpen) this.controller.abort();
  }

  /** The typed error for a failure of fetch or of a body read. */
  failure(cause: unknown, request: RequestContext, what: string): Qwen3TTSError {
    if (cause instanceof Qwen3TTSError) return cause;
    if (this.userAborted) return abortError(request);
    if (this.timedOut) {
      return new APITimeoutError(`no answer within ${this.timeoutMs} ms (${what})`, { request, cause });
    }
    const reason = cause instanceof Error ? describeCause(cause) : String(cause);
    if (what !== WAITING) {
      // The gateway answered: say where the connection broke, not "could not reach".
      return new APIConnectionError(`the connection to the gateway at ${request.url} dropped ${what}: ${reason}`, { request, cause });
    }
    const requestSent = !UNSENT_CODES.has(causeCode(cause) ?? "");
    return new APIConnectionError(`could not reach the gateway at ${request.url}: ${reason}`, { request, cause, requestSent });
  }
}

/** Failures to connect at all (refused, unknown host, unreachable): the request never left this machine. A
 * timeout is not one of them: it cannot tell a connect that hung from an answer that did not come. */
const UNSENT_CODES: ReadonlySet<string> = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"]);

/** The system error code of a fetch failure (undici puts the socket's error in `cause`). */
function causeCode(error: unknown): string | undefined {
  for (let current = error, depth = 0; current instanceof Error && depth < 4; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function describeCause(error: Error): string {
  // undici reports "fetch failed" with the socket's error as its cause.
  const inner = (error as { cause?: unknown }).cause;
  if (inner instanceof Error && inner.message) return `${error.message} (${inner.message})`;
  return error.message || error.name;
}

/** A response body read chunk by chunk under the idle timeout; `cancel()` closes the connection. */
export class StreamBody {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private finished = false;

  constructor(
    readonly response: Response,
    readonly request: RequestContext,
    private readonly control: AttemptControl,
  ) {
    if (!response.body) throw new APIConnectionError("the gateway sent no response body", { request });
    this.reader = response.body.getReader();
  }

  get headers(): Record<string, string> {
    return headersRecord(this.response.headers);
  }

  /** The next bytes, or null at the end of the body. */
  async read(): Promise<Uint8Array | null> {
    if (this.finished) return null;
    this.control.arm();
    try {
      const { done, value } = await this.reader.read();
      if (done) {
        this.finish(false);
        return null;
      }
      return value;
    } catch (error) {
      this.finish(true);
      throw this.control.failure(error, this.request, "while reading the stream");
    } finally {
      this.control.disarm();
    }
  }

  /** Stop reading: closes the connection, which cancels the synthesis on the server. */
  async cancel(): Promise<void> {
    if (this.finished) return;
    this.finish(true);
    await this.reader.cancel().catch(() => undefined);
  }

  private finish(abort: boolean): void {
    this.finished = true;
    this.control.release(abort);
  }

  /** The body as text lines (without the newline), decoded as UTF-8 across read boundaries. */
  async *lines(): AsyncGenerator<string, void, undefined> {
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const bytes = await this.read();
      if (bytes === null) break;
      pending += decoder.decode(bytes, { stream: true });
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        yield pending.slice(0, newline).replace(/\r$/, "");
        pending = pending.slice(newline + 1);
      }
    }
    pending += decoder.decode();
    if (pending) yield pending;
  }
}

/** An error response's body as text; when the connection drops mid-body, the part that came (`cutShort`). */
async function errorBodyText(response: Response): Promise<{ text: string; cutShort: boolean }> {
  if (!response.body) return { text: "", cutShort: false };
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { text: text + decoder.decode(), cutShort: false };
      text += decoder.decode(value, { stream: true });
    }
  } catch {
    return { text: text + decoder.decode(), cutShort: true };
  }
}

export class Transport {
  constructor(readonly config: TransportConfig) {}

  url(path: string): string {
    return this.config.baseUrl + path;
  }

  private headers(op: Operation, options: RequestOptions): Record<string, string> {
    const headers: Record<string, string> = { ...this.config.headers, ...op.headers, ...options.headers };
    if (this.config.apiKey) headers.authorization = `Bearer ${this.config.apiKey}`;
    if (op.json !== undefined) headers["content-type"] = "application/json";
    return headers;
  }

  private policy(op: Operation, options: RequestOptions): RetryPolicy {
    if (op.retry === false) return new RetryPolicy({ maxRetries: 0 });
    if (options.maxRetries === undefined) return this.config.retryPolicy;
    return this.config.retryPolicy.withMaxRetries(options.maxRetries);
  }

  /** Sends `op` until it succeeds or a final error; `attempt` returns the value or throws. */
  private async withRetries<T>(
    op: Operation,
    options: RequestOptions,
    attempt: (request: RequestContext) => Promise<T>,
  ): Promise<T> {
    const policy = this.policy(op, options);
    for (let retryIndex = 0; ; retryIndex++) {
      const request: RequestContext = { operation: op.name, method: op.method, url: this.url(op.path), attempt: retryIndex };
      try {
        return await attempt(request);
      } catch (error) {
        if (!policy.shouldRetry(error, retryIndex)) throw error;
        if (op.idempotent === false && !isSafeToResend(error)) throw error;
        const retryAfter = error instanceof Qwen3TTSError ? error.retryAfter : null;
        await sleep(policy.delayMs(retryIndex, retryAfter), options.signal, request);
      }
    }
  }

  /** Sends one attempt; resolves with the response once its status is known to be a success. */
  private async start(op: Operation, options: RequestOptions, request: RequestContext, control: AttemptControl): Promise<Response> {
    if (control.userAborted) throw abortError(request);
    control.arm();
    let response: Response;
    try {
      response = await this.config.fetch(request.url, {
        method: op.method,
        headers: this.headers(op, options),
        body: op.json === undefined ? undefined : JSON.stringify(op.json),
        signal: control.signal,
      });
    } catch (error) {
      throw control.failure(error, request, WAITING);
    }
    if (response.ok || op.okStatuses?.includes(response.status)) return response;
    const { text, cutShort } = await errorBodyText(response);
    // A connection dropped (or a timeout) mid-body must not hide the status behind a connection error; an
    // abort is the caller's and stays one.
    if (cutShort && control.userAborted) throw abortError(request);
    const headers = headersRecord(response.headers);
    throw errorFromResponse(response.status, text, {
      cutShort,
      headers,
      retryAfter: parseRetryAfter(response.headers.get("retry-after")),
      request,
      statusText: response.statusText,
    });
  }

  /** A whole response (body read within the timeout). */
  call(op: Operation, options: RequestOptions = {}): Promise<WholeResponse> {
    return this.withRetries(op, options, async (request) => {
      const control = new AttemptControl(options.signal, options.timeoutMs ?? this.config.timeoutMs);
      try {
        const response = await this.start(op, options, request, control);
        let body: Uint8Array;
        try {
          body = new Uint8Array(await response.arrayBuffer());
        } catch (error) {
          throw control.failure(error, request, "while reading the response");
        }
        return { response, body, headers: headersRecord(response.headers), request };
      } finally {
        control.release(false);
      }
    });
  }

  /** A streamed response: the status is checked (and retried) before any chunk is handed out. */
  open(op: Operation, options: RequestOptions = {}): Promise<StreamBody> {
    return this.withRetries(op, options, async (request) => {
      const control = new AttemptControl(options.signal, options.timeoutMs ?? this.config.timeoutMs);
      try {
        const response = await this.start(op, options, request, control);
        control.disarm();
        return new StreamBody(response, request, control);
      } catch (error) {
        control.release(true);
        throw error;
      }
    });
  }
}

export function parseJson(body: Uint8Array, request: RequestContext): unknown {
  const text = new TextDecoder().decode(body);
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new Qwen3TTSError(`the gateway sent invalid JSON for ${request.url}: ${text.slice(0, 80)}`, { request, cause });
  }
}
