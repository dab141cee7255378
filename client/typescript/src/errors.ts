/**
 * Errors raised by the client, one class per HTTP status the gateway answers with (the same classes as
 * the Python client's `qwen3_tts_client.errors`).
 *
 * Every error carries the HTTP `status` (`null` when no response arrived), the server's `message`
 * unchanged, and `request`: which call failed (operation, method, URL, attempt). The mapping from a
 * response to an error lives here so the client, the session and the provider raise the same thing for
 * the same answer.
 */

/** Which call an error belongs to. */
export interface RequestContext {
  /** The client method, e.g. `speak`, `stream`, `createVoice`, `session`. */
  operation: string;
  method: string;
  url: string;
  /** 0 for the first try, n for the n-th retry. */
  attempt: number;
}

/** One item of a 422's `errors` list: `{"loc": "body.speaker", "message": "...", "type": "value_error"}`. */
export interface ValidationIssue {
  loc: string;
  message: string;
  type: string;
}

export interface Qwen3TTSErrorOptions {
  status?: number | null;
  /** The gateway's error `type` (`invalid_request_error`, `server_overloaded`, ...). */
  type?: string | null;
  param?: string | null;
  errors?: ValidationIssue[];
  /** The raw error body (parsed JSON when it was JSON). */
  body?: unknown;
  headers?: Record<string, string>;
  /** Seconds the server asked us to wait (`Retry-After`), parsed. */
  retryAfter?: number | null;
  request?: RequestContext | null;
  cause?: unknown;
}

/** Base class of every error the client raises. */
export class Qwen3TTSError extends Error {
  readonly status: number | null;
  readonly type: string | null;
  readonly param: string | null;
  readonly errors: ValidationIssue[];
  readonly body: unknown;
  readonly headers: Record<string, string>;
  readonly retryAfter: number | null;
  readonly request: RequestContext | null;

  constructor(message: string, options: Qwen3TTSErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.status = options.status ?? null;
    this.type = options.type ?? null;
    this.param = options.param ?? null;
    this.errors = options.errors ?? [];
    this.body = options.body ?? null;
    this.headers = options.headers ?? {};
    this.retryAfter = options.retryAfter ?? null;
    this.request = options.request ?? null;
  }

  override toString(): string {
    const where = this.request ? ` (${this.request.method} ${this.request.url})` : "";
    return this.status === null
      ? `${this.name}: ${this.message}${where}`
      : `${this.name}: ${this.status}: ${this.message}${where}`;
  }
}

/** The gateway answered with an error status that has no more specific class. */
export class APIStatusError extends Qwen3TTSError {}
export class BadRequestError extends APIStatusError {}
export class AuthenticationError extends APIStatusError {}
export class PermissionDeniedError extends APIStatusError {}
export class NotFoundError extends APIStatusError {}
export class RequestTimeoutError extends APIStatusError {}
export class PayloadTooLargeError extends APIStatusError {}
/** 415: the body's Content-Type is neither JSON nor, where a route takes one, multipart/form-data. */
export class UnsupportedMediaTypeError extends APIStatusError {}
export class UnprocessableEntityError extends APIStatusError {}
export class RateLimitError extends APIStatusError {}
/** 500, and any other 5xx without its own class (the real status stays in `status`). */
export class InternalServerError extends APIStatusError {}
export class BadGatewayError extends InternalServerError {}
export class ServiceUnavailableError extends APIStatusError {}
export class GatewayTimeoutError extends APIStatusError {}

/** No HTTP answer: connection refused, DNS failure, connection reset, a stream cut short. */
export class APIConnectionError extends Qwen3TTSError {
  /**
   * False when the request never left this machine (no connection was made: refused, unknown host): then
   * the server cannot have acted on it, and even a call that is not idempotent may be sent again.
   */
  readonly requestSent: boolean;

  constructor(message: string, options: Qwen3TTSErrorOptions & { requestSent?: boolean } = {}) {
    super(message, options);
    this.requestSent = options.requestSent ?? true;
  }
}
/** The client gave up waiting (`timeoutMs`) before an answer came. */
export class APITimeoutError extends APIConnectionError {}
/** The caller's `AbortSignal` fired. Never retried, never counted against the gateway. */
export class APIUserAbortError extends Qwen3TTSError {}
/** The provider's circuit breaker is open: failing fast without calling the gateway. */
export class CircuitOpenError extends ServiceUnavailableError {}

type StatusErrorClass = new (message: string, options?: Qwen3TTSErrorOptions) => APIStatusError;

const BY_STATUS: ReadonlyMap<number, StatusErrorClass> = new Map<number, StatusErrorClass>([
  [400, BadRequestError],
  [401, AuthenticationError],
  [403, PermissionDeniedError],
  [404, NotFoundError],
  [408, RequestTimeoutError],
  [413, PayloadTooLargeError],
  [415, UnsupportedMediaTypeError],
  [422, UnprocessableEntityError],
  [429, RateLimitError],
  [500, InternalServerError],
  [502, BadGatewayError],
  [503, ServiceUnavailableError],
  [504, GatewayTimeoutError],
]);

/** The error class for an HTTP status (an unknown 5xx is an `InternalServerError`). */
export function errorClassForStatus(status: number): StatusErrorClass {
  return BY_STATUS.get(status) ?? (status >= 500 ? InternalServerError : APIStatusError);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function validationIssues(value: unknown): ValidationIssue[] {
  if (!Array.isArray(value)) return [];
  return value.filter(isRecord).map((item) => ({
    loc: String(item.loc ?? ""),
    message: String(item.message ?? item.msg ?? ""),
    type: String(item.type ?? ""),
  }));
}

function formatDetailItem(item: unknown): string {
  // FastAPI's default 422 detail: [{"loc": ["body", "x"], "msg": "..."}]; one readable line each.
  if (isRecord(item) && "msg" in item) {
    const loc = Array.isArray(item.loc) ? item.loc.filter((part) => part !== "body").map(String) : [];
    return loc.length ? `${loc.join(".")}: ${String(item.msg)}` : String(item.msg);
  }
  return typeof item === "string" ? item : JSON.stringify(item);
}

export interface ParsedErrorBody {
  message: string;
  type: string | null;
  param: string | null;
  errors: ValidationIssue[];
  body: unknown;
}

/**
 * The parts of an error body. Understands the gateway's `{"error": {"status", "type", "message",
 * "param", "errors"}}`, a WebSocket error event (`{"type": "error", "message", "error_type", ...}`),
 * FastAPI's `{"detail": ...}` and plain text (a proxy's page).
 */
export function parseErrorBody(text: string, fallback: string): ParsedErrorBody {
  let payload: unknown;
  try {
    payload = text.trim() ? JSON.parse(text) : null;
  } catch {
    return { message: text.trim() || fallback, type: null, param: null, errors: [], body: text };
  }
  const error = isRecord(payload) && isRecord(payload.error) ? payload.error : payload;
  if (isRecord(error)) {
    const type = typeof error.error_type === "string" ? error.error_type : error.type;
    const fields = {
      type: typeof type === "string" && type !== "error" ? type : null,
      param: typeof error.param === "string" ? error.param : null,
      errors: validationIssues(error.errors),
      body: payload,
    };
    if (typeof error.message === "string" && error.message) return { message: error.message, ...fields };
    const detail = error.detail;
    if (typeof detail === "string" && detail) return { message: detail, ...fields };
    if (Array.isArray(detail) && detail.length) {
      return { message: detail.map(formatDetailItem).join("; "), ...fields };
    }
  }
  return {
    message: payload === null ? fallback : JSON.stringify(payload),
    type: null,
    param: null,
    errors: [],
    body: payload,
  };
}

/** The typed error for an error response (its body already read as text). */
export function errorFromResponse(
  status: number,
  bodyText: string,
  options: {
    headers?: Record<string, string>;
    retryAfter?: number | null;
    request?: RequestContext | null;
    statusText?: string;
    /** The connection dropped while the body was read; `bodyText` is the part that came. */
    cutShort?: boolean;
  } = {},
): APIStatusError {
  const parsed = parseErrorBody(bodyText, options.statusText || `HTTP ${status}`);
  const ErrorClass = errorClassForStatus(status);
  const message = options.cutShort ? `${parsed.message} (the connection dropped while the error was read)` : parsed.message;
  return new ErrorClass(message, {
    status,
    type: parsed.type,
    param: parsed.param,
    errors: parsed.errors,
    body: parsed.body,
    headers: options.headers ?? {},
    retryAfter: options.retryAfter ?? null,
    request: options.request ?? null,
  });
}

/** An error event of a stream or socket (`{"error": {...}}` NDJSON line, WebSocket `error` event). */
export function errorFromEvent(event: Record<string, unknown>, request: RequestContext | null): APIStatusError {
  const inner = isRecord(event.error) ? event.error : event;
  const status = Number(inner.status);
  return errorFromResponse(Number.isInteger(status) && status >= 400 ? status : 500, JSON.stringify(event), {
    request,
  });
}
