/**
 * In-process metrics of the provider: calls, failures by error class, fast-failed calls, latency
 * quantiles, characters and seconds of audio. No dependencies: apps that export Prometheus (or anything
 * else) read `snapshot()` and re-export.
 */

/** Milliseconds; spans a short cached phrase to a long paragraph on a busy GPU. */
export const LATENCY_BUCKETS_MS: readonly number[] = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000];

export interface LatencySnapshot {
  count: number;
  sumMs: number;
  meanMs: number | null;
  /** Upper bound of the bucket holding the quantile (coarse, like Prometheus' histogram_quantile). */
  p50Ms: number | null;
  p95Ms: number | null;
  /** Cumulative: observations at or below each bound (`le_inf` is the count). */
  buckets: Record<string, number>;
}

export interface MetricsSnapshot {
  requests: number;
  successes: number;
  failures: number;
  /** Failed fast by the open circuit, never sent. */
  rejected: number;
  requestsByOperation: Record<string, number>;
  failuresByOperation: Record<string, number>;
  failuresByError: Record<string, number>;
  charactersSynthesized: number;
  audioSeconds: number;
  latency: LatencySnapshot;
  lastError: { name: string; status: number | null; message: string; at: number } | null;
}

class LatencyHistogram {
  private readonly counts: number[];
  count = 0;
  sumMs = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(ms: number): void {
    let index = this.bounds.findIndex((bound) => ms <= bound);
    if (index < 0) index = this.bounds.length;
    this.counts[index] = (this.counts[index] ?? 0) + 1;
    this.count += 1;
    this.sumMs += ms;
  }

  quantile(q: number): number | null {
    if (this.count === 0) return null;
    const rank = q * this.count;
    let running = 0;
    for (let i = 0; i < this.counts.length; i++) {
      running += this.counts[i] ?? 0;
      if (running >= rank && running > 0) return this.bounds[i] ?? Number.POSITIVE_INFINITY;
    }
    return Number.POSITIVE_INFINITY;
  }

  snapshot(): LatencySnapshot {
    const buckets: Record<string, number> = {};
    let running = 0;
    this.counts.forEach((n, i) => {
      running += n;
      buckets[`le_${this.bounds[i] ?? "inf"}`] = running;
    });
    return {
      count: this.count,
      sumMs: this.sumMs,
      meanMs: this.count ? this.sumMs / this.count : null,
      p50Ms: this.quantile(0.5),
      p95Ms: this.quantile(0.95),
      buckets,
    };
  }
}

function increment(record: Record<string, number>, key: string): void {
  record[key] = (record[key] ?? 0) + 1;
}

export class ProviderMetrics {
  private requests: Record<string, number> = {};
  private failures: Record<string, number> = {};
  private failuresByError: Record<string, number> = {};
  private rejected = 0;
  private characters = 0;
  private audioSeconds = 0;
  private latency: LatencyHistogram;
  private lastError: MetricsSnapshot["lastError"] = null;

  constructor(
    private readonly buckets: readonly number[] = LATENCY_BUCKETS_MS,
    private readonly now: () => number = Date.now,
  ) {
    this.latency = new LatencyHistogram(buckets);
  }

  record(operation: string, latencyMs: number, error?: unknown): void {
    increment(this.requests, operation);
    this.latency.observe(latencyMs);
    if (error !== undefined) {
      increment(this.failures, operation);
      const name = error instanceof Error ? error.name : typeof error;
      increment(this.failuresByError, name);
      const status = (error as { status?: unknown }).status;
      this.lastError = {
        name,
        status: typeof status === "number" ? status : null,
        message: error instanceof Error ? error.message : String(error),
        at: this.now(),
      };
    }
  }

  recordRejected(): void {
    this.rejected += 1;
  }

  recordSynthesis(characters: number, audioSeconds: number | null): void {
    this.characters += characters;
    this.audioSeconds += audioSeconds ?? 0;
  }

  snapshot(): MetricsSnapshot {
    const sum = (record: Record<string, number>): number => Object.values(record).reduce((a, b) => a + b, 0);
    const requests = sum(this.requests);
    const failures = sum(this.failures);
    return {
      requests,
      successes: requests - failures,
      failures,
      rejected: this.rejected,
      requestsByOperation: { ...this.requests },
      failuresByOperation: { ...this.failures },
      failuresByError: { ...this.failuresByError },
      charactersSynthesized: this.characters,
      audioSeconds: this.audioSeconds,
      latency: this.latency.snapshot(),
      lastError: this.lastError ? { ...this.lastError } : null,
    };
  }

  reset(): void {
    this.requests = {};
    this.failures = {};
    this.failuresByError = {};
    this.rejected = 0;
    this.characters = 0;
    this.audioSeconds = 0;
    this.latency = new LatencyHistogram(this.buckets);
    this.lastError = null;
  }
}
