/** qwen3-tts-client: the Qwen3-TTS gateway from TypeScript (Node 20+, browsers, React Native). */

export {
  Qwen3TTSClient,
  DEFAULT_BASE_URL,
  DEFAULT_TIMEOUT_MS,
  ENV_API_KEY,
  ENV_BASE_URL,
  VERSION,
  type ClientOptions,
  type SpeechStreamParams,
} from "./client.js";
export {
  Qwen3TTSProvider,
  type CostEstimate,
  type ProviderHealth,
  type ProviderMetricsSnapshot,
  type ProviderOptions,
  type ProviderSynthesisRequest,
  type ProviderSynthesisResult,
  type ProviderVoice,
} from "./provider.js";
export {
  HandshakeRefusal,
  SpeechSession,
  defaultWebSocketFactory,
  sessionStartMessage,
  websocketUrl,
  MAX_LOOKAHEAD_TOKENS,
  SESSION_PATH,
  type SessionEvent,
  type SessionOptions,
  type SessionStarted,
  type SessionSummary,
  type WebSocketFactory,
  type WebSocketLike,
} from "./session.js";
export { ChunkStream, type CollectedAudio } from "./streams.js";
export * from "./errors.js";
export {
  RetryPolicy,
  isRetryableError,
  isRetryableStatus,
  isSafeToResend,
  parseRetryAfter,
  type RetryPolicyOptions,
} from "./retry.js";
export { CircuitBreaker, type CircuitBreakerOptions, type CircuitState } from "./breaker.js";
export { ProviderMetrics, LATENCY_BUCKETS_MS, type LatencySnapshot, type MetricsSnapshot } from "./metrics.js";
export {
  CLONE_PREFIX,
  LANGUAGES,
  TIMBRES,
  UnknownVoiceError,
  VALID_VOICE_PATTERNS,
  VOICE_PREFIX,
  cloneVoiceId,
  isSupportedVoice,
  premiumVoiceId,
  routeVoice,
  type VoiceKind,
  type VoiceRoute,
} from "./routing.js";
export {
  SAMPLE_RATE,
  base64ToBytes,
  bytesToBase64,
  concatBytes,
  concatSamples,
  encodeWav,
  float32ToPcm16,
  pcm16ToFloat32,
} from "./audio.js";
export type { FetchLike } from "./http.js";
export * from "./types.js";
