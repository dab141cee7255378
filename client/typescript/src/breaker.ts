/**
 * The provider's circuit breaker, so that a dead gateway costs callers nothing but an exception:
 *
 *   closed --maxConsecutiveFailures in a row--> open --cooldownPeriodMs elapsed--> reinitializing
 *     ^                                                                                |
 *     +---------------- initialize() succeeded ------ failed: open again -------------+
 *
 * While open every call fails fast with `CircuitOpenError`. Only failures that say "the service is
 * unwell" count (connection errors, timeouts, 408, 429, 5xx: `isRetryableError`); an error about the
 * caller's own request (another 4xx) proves the gateway answered and counts as a success. The clock is
 * injectable so tests can run the cooldown in no time.
 */

import { CircuitOpenError } from "./errors.js";
import { isRetryableError } from "./retry.js";

export type CircuitState = "closed" | "open" | "half_open";

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit (default 3). */
  maxConsecutiveFailures?: number;
  /** Milliseconds the circuit stays open before the provider re-initialises (default 30 000). */
  cooldownPeriodMs?: number;
  /** Milliseconds, monotonic enough; default `Date.now`. */
  now?: () => number;
}

export class CircuitBreaker {
  readonly maxConsecutiveFailures: number;
  readonly cooldownPeriodMs: number;
  private readonly now: () => number;
  private failures = 0;
  private openedAt: number | null = null;

  constructor(options: CircuitBreakerOptions = {}) {
    this.maxConsecutiveFailures = options.maxConsecutiveFailures ?? 3;
    this.cooldownPeriodMs = options.cooldownPeriodMs ?? 30_000;
    this.now = options.now ?? Date.now;
    if (!Number.isInteger(this.maxConsecutiveFailures) || this.maxConsecutiveFailures < 1) {
      throw new RangeError(`maxConsecutiveFailures must be an integer >= 1, got ${this.maxConsecutiveFailures}`);
    }
    if (!(this.cooldownPeriodMs >= 0)) {
      throw new RangeError(`cooldownPeriodMs must be >= 0, got ${this.cooldownPeriodMs}`);
    }
  }

  /** `half_open`: the cooldown has elapsed and the next call re-initialises first. */
  get state(): CircuitState {
    if (this.openedAt === null) return "closed";
    return this.now() - this.openedAt >= this.cooldownPeriodMs ? "half_open" : "open";
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  /** False while calls would fail fast. */
  get available(): boolean {
    return this.state !== "open";
  }

  /** Milliseconds until the cooldown ends (0 unless open). */
  remainingCooldownMs(): number {
    if (this.openedAt === null) return 0;
    return Math.max(0, this.cooldownPeriodMs - (this.now() - this.openedAt));
  }

  /** Throws `CircuitOpenError` while open. */
  check(): void {
    if (this.state !== "open") return;
    const waitMs = this.remainingCooldownMs();
    throw new CircuitOpenError(
      `circuit breaker open after ${this.failures} consecutive failures; not calling the gateway for another ${(waitMs / 1000).toFixed(1)} s`,
      { status: 503, type: "circuit_open", retryAfter: waitMs / 1000 },
    );
  }

  recordSuccess(): void {
    this.failures = 0;
    this.openedAt = null;
  }

  /** Count a failure (an error that is the caller's fault counts as a success); returns true when this
   * failure opened the circuit. */
  recordFailure(error?: unknown): boolean {
    if (error !== undefined && !isRetryableError(error)) {
      this.recordSuccess();
      return false;
    }
    this.failures += 1;
    // Re-arm the timer only on a transition (closed -> open, or a failed re-initialisation): late
    // failures of calls admitted before the circuit opened must not push the cooldown back.
    const opens = this.openedAt === null ? this.failures >= this.maxConsecutiveFailures : this.state === "half_open";
    if (opens) this.openedAt = this.now();
    return opens;
  }
}
