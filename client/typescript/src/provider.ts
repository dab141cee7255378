/**
 * `Qwen3TTSProvider`: what a multi-vendor TTS router talks to (the Python `provider.py`, in the shape of
 * a typical provider interface: initialize, synthesize, synthesizeStream, getAvailableVoices,
 * healthCheck, estimateCost, getMetrics).
 *
 * Voice ids route by pattern (routing.ts): `qwen3-{timbre}` to the premium timbres, `qwen3-clone-{id}` to
 * the voice library; anything else is rejected with the valid patterns named, before any request. Every
 * gateway call goes through the circuit breaker (breaker.ts): after `maxConsecutiveFailures` it fails
 * fast for `cooldownPeriodMs`, then the next call re-initialises (GET /health) before it is sent. Errors
 * reach the caller unchanged: the client's typed errors with status, message and request.
 */

import { CircuitBreaker, type CircuitState } from "./breaker.js";
import { Qwen3TTSClient, type ClientOptions } from "./client.js";
import { APIUserAbortError, ServiceUnavailableError } from "./errors.js";
import { ProviderMetrics, type MetricsSnapshot } from "./metrics.js";
import { VOICE_PREFIX, routeVoice, type VoiceKind, type VoiceRoute } from "./routing.js";
import type { AudioChunk, OutputFormat, RequestOptions, SamplingOptions, SpeechResult } from "./types.js";

export interface ProviderOptions extends ClientOptions {
  /** An existing client (its options win over the ones above). */
  client?: Qwen3TTSClient;
  /** Consecutive failures that make the provider unavailable (default 3). */
  maxConsecutiveFailures?: number;
  /** Milliseconds it stays unavailable before it re-initialises (default 30 000). */
  cooldownPeriodMs?: number;
  /** Price of one input character (default 0: self-hosted). */
  pricePerCharacter?: number;
  /** Price of one second of generated audio (default 0). */
  pricePerSecond?: number;
  currency?: string;
  /** Characters per second of speech, to estimate audio length from text (default 15). */
  charactersPerSecond?: number;
  defaultLanguage?: string;
  defaultFormat?: OutputFormat;
  /** Milliseconds clock of the breaker and the metrics (inject a fake one in tests). */
  now?: () => number;
}

export interface ProviderSynthesisRequest extends SamplingOptions, RequestOptions {
  text: string;
  /** `qwen3-{timbre}` or `qwen3-clone-{id}`. */
  voiceId: string;
  language?: string;
  /** Style instruction (timbres only). */
  instruct?: string;
  format?: OutputFormat;
}

export interface ProviderSynthesisResult extends SpeechResult {
  voiceId: string;
  provider: string;
  latencyMs: number;
}

export interface ProviderVoice {
  /** What to pass back as `voiceId`. */
  id: string;
  provider: string;
  kind: VoiceKind;
  name: string;
  description: string | null;
  /** The timbre's native language (premium voices). */
  nativeLanguage: string | null;
  /** Languages it can speak: every language of the gateway. */
  languages: string[];
}

export interface ProviderHealth {
  healthy: boolean;
  status: "healthy" | "degraded" | "unavailable";
  circuit: CircuitState;
  consecutiveFailures: number;
  latencyMs: number | null;
  /** Per-model readiness from GET /ready. */
  models: Record<string, boolean>;
  message: string | null;
}

export interface CostEstimate {
  characters: number;
  /** The given seconds, else estimated from the text. */
  audioSeconds: number;
  cost: number;
  currency: string;
}

export interface ProviderMetricsSnapshot extends MetricsSnapshot {
  provider: string;
  available: boolean;
  initialized: boolean;
  circuit: CircuitState;
  consecutiveFailures: number;
}

export class Qwen3TTSProvider {
  readonly name = "qwen3";
  readonly client: Qwen3TTSClient;
  readonly breaker: CircuitBreaker;
  private readonly metrics: ProviderMetrics;
  private readonly options: ProviderOptions;
  private initialized = false;
  private initializing: Promise<void> | null = null;

  constructor(options: ProviderOptions = {}) {
    this.options = options;
    this.client = options.client ?? new Qwen3TTSClient(options);
    this.breaker = new CircuitBreaker({
      maxConsecutiveFailures: options.maxConsecutiveFailures,
      cooldownPeriodMs: options.cooldownPeriodMs,
      now: options.now,
    });
    this.metrics = new ProviderMetrics(undefined, options.now);
    for (const [name, value] of [
      ["pricePerCharacter", options.pricePerCharacter],
      ["pricePerSecond", options.pricePerSecond],
      ["charactersPerSecond", options.charactersPerSecond],
    ] as const) {
      if (value !== undefined && !(value >= 0 && Number.isFinite(value))) {
        throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
      }
    }
  }

  /** Checks GET /health; rejects with the typed error when the gateway is not there. */
  async initialize(options: RequestOptions = {}): Promise<void> {
    const started = this.clock();
    try {
      const health = await this.client.health(options);
      if (!health.ok) {
        throw new ServiceUnavailableError(`the gateway is not healthy: ${health.status}`, { status: 503 });
      }
    } catch (error) {
      this.initialized = false;
      this.settle("initialize", started, error);
      throw error;
    }
    this.initialized = true;
    this.settle("initialize", started);
  }

  /** False while the circuit is open (calls fail fast until the cooldown is over). */
  isAvailable(): boolean {
    return this.breaker.available;
  }

  supportsVoice(voiceId: string): boolean {
    try {
      routeVoice(voiceId);
      return true;
    } catch {
      return false;
    }
  }

  /** Where `voiceId` goes; `UnknownVoiceError` (naming the valid patterns) for anything else. */
  route(voiceId: string): VoiceRoute {
    return routeVoice(voiceId);
  }

  // ------------------------------------------------------------------------------------ calls

  private clock(): number {
    return (this.options.now ?? Date.now)();
  }

  /** Fail fast while open; re-initialise once the cooldown is over (or before the first call). */
  private async admit(options: RequestOptions): Promise<void> {
    try {
      this.breaker.check();
    } catch (error) {
      this.metrics.recordRejected();
      throw error;
    }
    if (this.initialized && this.breaker.state === "closed") return;
    // One (re-)initialisation at a time; concurrent callers wait for its verdict.
    this.initializing ??= this.initialize({ signal: options.signal, timeoutMs: options.timeoutMs }).finally(() => {
      this.initializing = null;
    });
    await this.initializing;
  }

  /** Tell the breaker and the metrics how a call ended. */
  private settle(operation: string, started: number, error?: unknown): void {
    if (error instanceof APIUserAbortError) return; // the caller left: no verdict on the gateway
    const latency = Math.max(0, this.clock() - started);
    this.metrics.record(operation, latency, error);
    if (error === undefined) this.breaker.recordSuccess();
    else this.breaker.recordFailure(error);
  }

  private async guarded<T>(operation: string, options: RequestOptions, call: () => Promise<T>): Promise<T> {
    await this.admit(options);
    const started = this.clock();
    let result: T;
    try {
      result = await call();
    } catch (error) {
      this.settle(operation, started, error);
      throw error;
    }
    this.settle(operation, started);
    return result;
  }

  private voiceRequest(request: ProviderSynthesisRequest): { route: VoiceRoute; voice: string } {
    const route = routeVoice(request.voiceId);
    if (route.kind === "clone" && request.instruct) {
      throw new RangeError("instruct (a style instruction) applies only to qwen3-{timbre} voices, not to clones");
    }
    return { route, voice: route.gatewayVoice };
  }

  /** The whole file for `text` in `voiceId`. */
  async synthesize(request: ProviderSynthesisRequest): Promise<ProviderSynthesisResult> {
    const { route, voice } = this.voiceRequest(request);
    const started = this.clock();
    const result = await this.guarded(`synthesize_${route.kind}`, request, () =>
      this.client.speak(request.text, {
        ...request,
        voice,
        language: request.language ?? this.options.defaultLanguage,
        responseFormat: request.format ?? this.options.defaultFormat,
      }),
    );
    this.metrics.recordSynthesis(request.text.length, result.duration);
    return { ...result, voiceId: route.voiceId, provider: this.name, latencyMs: this.clock() - started };
  }

  /** Chunks as they are generated (NDJSON); the whole stream is one call for the breaker and metrics. */
  async *synthesizeStream(request: ProviderSynthesisRequest): AsyncGenerator<AudioChunk, void, undefined> {
    const { route, voice } = this.voiceRequest(request);
    const operation = `stream_${route.kind}`;
    await this.admit(request);
    const started = this.clock();
    let samples = 0;
    let sampleRate = 0;
    let completed = false;
    try {
      for await (const chunk of this.client.stream(request.text, {
        ...request,
        voice,
        language: request.language ?? this.options.defaultLanguage,
      })) {
        samples += chunk.samples.length;
        sampleRate = chunk.sampleRate;
        yield chunk;
      }
      completed = true;
    } catch (error) {
      this.settle(operation, started, error);
      throw error;
    } finally {
      // A consumer that stopped early (break) gave no verdict on the gateway.
      if (completed) {
        this.settle(operation, started);
        this.metrics.recordSynthesis(request.text.length, sampleRate ? samples / sampleRate : 0);
      }
    }
  }

  // ------------------------------------------------------------------------------------ catalog

  /** The timbres (`qwen3-{timbre}`, from GET /speakers) and saved clones (`qwen3-clone-{id}`, from GET
   * /voices), each with the languages of GET /languages. */
  async getAvailableVoices(options: RequestOptions = {}): Promise<ProviderVoice[]> {
    const [speakers, languages, clones] = await this.guarded("getAvailableVoices", options, () =>
      Promise.all([this.client.speakers(options), this.client.languages(options), this.client.listVoices(options)]),
    );
    const codes = languages.map((language) => language.code);
    const voices: ProviderVoice[] = speakers.map((speaker) => ({
      id: VOICE_PREFIX + speaker.name,
      provider: this.name,
      kind: "premium",
      name: speaker.name,
      description: speaker.description,
      nativeLanguage: speaker.nativeLanguage,
      languages: codes,
    }));
    for (const clone of clones) {
      voices.push({
        id: clone.voiceId,
        provider: this.name,
        kind: "clone",
        name: clone.name ?? clone.id,
        description: clone.refText,
        nativeLanguage: null,
        languages: codes,
      });
    }
    return voices;
  }

  /** GET /ready through the breaker: healthy (ready), degraded (answered, models not ready) or
   * unavailable (unreachable, or the circuit is open). Never throws for the gateway's state. */
  async healthCheck(options: RequestOptions = {}): Promise<ProviderHealth> {
    const started = this.clock();
    try {
      const ready = await this.guarded("healthCheck", options, () => this.client.ready(options));
      const latencyMs = this.clock() - started;
      return this.health(ready.ready ? "healthy" : "degraded", latencyMs, ready.models, ready.ready ? null : "models not ready");
    } catch (error) {
      if (error instanceof APIUserAbortError) throw error;
      return this.health("unavailable", null, {}, error instanceof Error ? error.message : String(error));
    }
  }

  private health(status: ProviderHealth["status"], latencyMs: number | null, models: Record<string, boolean>, message: string | null): ProviderHealth {
    return {
      healthy: status === "healthy",
      status,
      circuit: this.breaker.state,
      consecutiveFailures: this.breaker.consecutiveFailures,
      latencyMs,
      models,
      message,
    };
  }

  /** Price of `text` (per character) plus its audio (per second: `audioSeconds`, else estimated). */
  estimateCost(text: string, audioSeconds?: number): CostEstimate {
    if (audioSeconds !== undefined && !(audioSeconds >= 0 && Number.isFinite(audioSeconds))) {
      throw new RangeError(`audioSeconds must be a finite number >= 0, got ${audioSeconds}`);
    }
    const characters = text.length;
    const seconds = audioSeconds ?? characters / (this.options.charactersPerSecond || 15);
    const cost = characters * (this.options.pricePerCharacter ?? 0) + seconds * (this.options.pricePerSecond ?? 0);
    return { characters, audioSeconds: seconds, cost, currency: this.options.currency ?? "USD" };
  }

  getMetrics(): ProviderMetricsSnapshot {
    return {
      ...this.metrics.snapshot(),
      provider: this.name,
      available: this.isAvailable(),
      initialized: this.initialized,
      circuit: this.breaker.state,
      consecutiveFailures: this.breaker.consecutiveFailures,
    };
  }
}
