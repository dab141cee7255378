/**
 * Retry policy (the Python client's `retry.py`): only answers that may succeed when asked again are
 * retried — 408, 429, every 5xx, and failures to get an answer at all (connection refused or reset,
 * timeouts). Any other 4xx is the caller's mistake and is raised at once; an abort is never retried.
 *
 * The wait before retry `n` (0-based) is `backoffBaseMs * 2**n` capped at `maxBackoffMs`, with jitter of
 * ±`jitter` (a fraction) so clients rejected together do not come back together. A `Retry-After` from
 * the server wins over the computed backoff, capped at `maxRetryAfterMs`.
 */

import { APIConnectionError, APIUserAbortError, Qwen3TTSError } from "./errors.js";

export interface RetryPolicyOptions {
  /** Retries after the first try (default 2). */
  maxRetries?: number;
  backoffBaseMs?: number;
  maxBackoffMs?: number;
  /** Fraction in [0, 1]. */
  jitter?: number;
  maxRetryAfterMs?: number;
  /** A number in [0, 1); injectable so tests can pin the jitter. */
  random?: () => number;
}

const RETRYABLE_4XX: ReadonlySet<number> = new Set([408, 429]);
/** The answers that say the request was not carried out at all: the only statuses after which a call that
 * is not idempotent (`createVoice` stores a voice) is sent again. */
const REFUSED_STATUSES: ReadonlySet<number> = new Set([408, 429, 503]);

export function isRetryableStatus(status: number): boolean {
  return RETRYABLE_4XX.has(status) || (status >= 500 && status <= 599);
}

/** True for errors a later attempt might not hit (also what the provider's circuit breaker counts). */
export function isRetryableError(error: unknown): boolean {
  if (error instanceof APIUserAbortError) return false;
  if (error instanceof APIConnectionError) return true;
  return error instanceof Qwen3TTSError && error.status !== null && isRetryableStatus(error.status);
}

/**
 * True when the failed request cannot have been carried out, so even a call that is not idempotent may be
 * sent again: it never reached the server, or the server refused it (408, 429, 503). After a timeout or a
 * 500 the voice may be stored already, and a second attempt would store it twice.
 */
export function isSafeToResend(error: unknown): boolean {
  if (error instanceof APIConnectionError) return !error.requestSent;
  return error instanceof Qwen3TTSError && error.status !== null && REFUSED_STATUSES.has(error.status);
}

/**
 * Seconds from a `Retry-After` value: delta-seconds or an HTTP date; null when absent or invalid (then the
 * backoff applies), as in the Python client. An HTTP date has a time of day (RFC 9110 5.6.7, all three
 * forms): `Date.parse` alone would read "May 1" or "x 2020" as a past date, a retry at once.
 */
export function parseRetryAfter(value: string | null | undefined, now: () => number = Date.now): number | null {
  if (value === null || value === undefined) return null;
  const trimmed = value.trim();
  if (!trimmed) return null;
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed);
  if (/^[+-]?[\d.]/.test(trimmed) || !/\b\d{1,2}:\d{2}:\d{2}\b/.test(trimmed)) return null;
  // asctime's form has no zone, and an HTTP date is always GMT: Date.parse would read it as local time.
  const when = Date.parse(/(GMT|UTC|[+-]\d{4})$/i.test(trimmed) ? trimmed : `${trimmed} GMT`);
  if (Number.isNaN(when)) return null;
  return Math.max(0, (when - now()) / 1000);
}

function checkMaxRetries(maxRetries: number): void {
  if (!Number.isInteger(maxRetries) || maxRetries < 0) {
    throw new RangeError(`maxRetries must be an integer >= 0, got ${maxRetries}`);
  }
}

export class RetryPolicy {
  readonly maxRetries: number;
  readonly backoffBaseMs: number;
  readonly maxBackoffMs: number;
  readonly jitter: number;
  readonly maxRetryAfterMs: number;
  private readonly random: () => number;

  constructor(options: RetryPolicyOptions = {}) {
    this.maxRetries = options.maxRetries ?? 2;
    this.backoffBaseMs = options.backoffBaseMs ?? 500;
    this.maxBackoffMs = options.maxBackoffMs ?? 8000;
    this.jitter = options.jitter ?? 0.25;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 60_000;
    this.random = options.random ?? Math.random;
    checkMaxRetries(this.maxRetries);
    if (this.backoffBaseMs < 0 || this.maxBackoffMs < 0 || this.maxRetryAfterMs < 0) {
      throw new RangeError("backoffBaseMs, maxBackoffMs and maxRetryAfterMs must be >= 0");
    }
    if (!(this.jitter >= 0 && this.jitter <= 1)) {
      throw new RangeError(`jitter is a fraction in [0, 1], got ${this.jitter}`);
    }
  }

  /**
   * This policy with another retry count (a per-call `maxRetries`): everything else is kept, the jitter
   * source (`random`) included, and so is the class of a policy that extends this one.
   */
  withMaxRetries(maxRetries: number): RetryPolicy {
    if (maxRetries === this.maxRetries) return this;
    checkMaxRetries(maxRetries);
    // A copy rather than `new RetryPolicy(...)`: a subclass's own fields and overrides must survive too.
    return Object.assign(Object.create(Object.getPrototypeOf(this) as object) as RetryPolicy, this, { maxRetries });
  }

  /** The computed wait before retry `retryIndex` (0-based), jitter included. */
  backoffMs(retryIndex: number): number {
    let delay = Math.min(this.maxBackoffMs, this.backoffBaseMs * 2 ** retryIndex);
    if (this.jitter) delay *= 1 - this.jitter + 2 * this.jitter * this.random();
    return Math.max(0, delay);
  }

  shouldRetry(error: unknown, retryIndex: number): boolean {
    return retryIndex < this.maxRetries && isRetryableError(error);
  }

  /** The wait before retry `retryIndex`: the server's Retry-After (seconds) when given, else the backoff. */
  delayMs(retryIndex: number, retryAfterSeconds: number | null): number {
    if (retryAfterSeconds !== null && Number.isFinite(retryAfterSeconds)) {
      return Math.min(Math.max(0, retryAfterSeconds * 1000), this.maxRetryAfterMs);
    }
    return this.backoffMs(retryIndex);
  }
}
