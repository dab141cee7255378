/** Request options and results, field for field the gateway's schemas (gateway/qwen3_tts_gateway/schemas.py). */

/** Whole-file formats (`response_format`). */
export type OutputFormat = "wav" | "flac" | "mp3" | "opus" | "pcm";
/** Formats that can be sent as they are encoded (raw audio streams, sessions, the OpenAI route). */
export type StreamFormat = "pcm" | "wav" | "mp3" | "opus";
/** Why a synthesis ended: `stop` (end of speech), `length` (frame budget), `repetition` (loop guard),
 * and for sessions also `idle_timeout` and `cancelled`. */
export type FinishReason = "stop" | "length" | "repetition" | "idle_timeout" | "cancelled" | (string & {});

export const OUTPUT_FORMATS: readonly OutputFormat[] = ["wav", "flac", "mp3", "opus", "pcm"];
export const STREAM_FORMATS: readonly StreamFormat[] = ["pcm", "wav", "mp3", "opus"];

export const CONTENT_TYPES: Readonly<Record<OutputFormat, string>> = {
  wav: "audio/wav",
  flac: "audio/flac",
  mp3: "audio/mpeg",
  opus: "audio/ogg; codecs=opus",
  pcm: "audio/pcm",
};

/** Optional sampling overrides (the model's defaults otherwise); sent as the gateway's snake_case fields. */
export interface SamplingOptions {
  /** false = greedy decoding. */
  doSample?: boolean;
  temperature?: number;
  /** 0 disables top-k. */
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  /** Upper bound on codec frames (12.5 per second of audio). */
  maxNewTokens?: number;
  /** Makes sampling reproducible. */
  seed?: number;
}

/** Per-call options: cancellation, a timeout and retries of their own. */
export interface RequestOptions {
  /** Aborting rejects the call with `APIUserAbortError` and cancels the request on the server. */
  signal?: AbortSignal;
  /** Milliseconds for this call (streams: until the response starts, then between reads). */
  timeoutMs?: number;
  maxRetries?: number;
  headers?: Record<string, string>;
}

/** Text in a built-in timbre (`speaker`) or a timbre / library voice (`voice: "qwen3-clone-<id>"`). */
export interface VoiceSelection {
  /** A timbre (`vivian`, ...) or `qwen3-clone-<id>`; overrides `speaker`. */
  voice?: string;
  /** A built-in timbre. */
  speaker?: string;
  /** A language (`english`, ...; ISO 639-1 codes such as `en` are accepted); default `auto`. */
  language?: string;
  /** Style instruction (built-in timbres only). */
  instruct?: string;
}

export interface SpeakOptions extends VoiceSelection, SamplingOptions, RequestOptions {
  responseFormat?: OutputFormat;
}

export interface StreamOptions extends VoiceSelection, SamplingOptions, RequestOptions {}

export interface AudioStreamOptions extends StreamOptions {
  /** Raw bytes of this encoding as it is produced (default pcm: s16le mono). */
  format?: StreamFormat;
}

export interface DesignOptions extends SamplingOptions, RequestOptions {
  /** The voice in words, e.g. "a calm, low male voice". */
  instruct: string;
  language?: string;
  responseFormat?: OutputFormat;
}

/** A reference clip: the bytes of a WAV/FLAC/MP3/OGG file, or mono float samples with their rate. */
export type ReferenceAudio = Uint8Array | ArrayBuffer | { samples: ArrayLike<number>; sampleRate: number };

export interface CloneOptions extends SamplingOptions, RequestOptions {
  referenceAudio: ReferenceAudio;
  /** Transcript of the reference clip (in-context cloning). */
  refText?: string;
  /** Clone from the speaker embedding only. */
  xVectorOnly?: boolean;
  language?: string;
  responseFormat?: OutputFormat;
}

export interface CreateVoiceOptions extends RequestOptions {
  referenceAudio: ReferenceAudio;
  refText?: string;
  name?: string;
  xVectorOnly?: boolean;
}

/** `POST /v1/audio/speech` (OpenAI's names, so code written for OpenAI maps over one to one). */
export interface OpenAISpeechParams extends SamplingOptions, RequestOptions {
  model?: string;
  input: string;
  /** A timbre or `qwen3-clone-<id>`. */
  voice: string;
  instructions?: string;
  /** Default mp3. */
  response_format?: OutputFormat;
  /** Only 1.0 is supported. */
  speed?: number;
  language?: string;
}

/** A whole synthesized file as the gateway encoded it, plus its metadata headers. */
export interface SpeechResult {
  audio: Uint8Array;
  format: OutputFormat;
  contentType: string;
  sampleRate: number | null;
  /** Seconds (`X-Audio-Duration`). */
  duration: number | null;
  finishReason: FinishReason | null;
  headers: Record<string, string>;
}

/** One piece of a stream. */
export interface AudioChunk {
  /** 0, 1, 2, ... in order. */
  sequence: number;
  /** Mono float samples in [-1, 1) (empty for encoded formats: mp3, opus). */
  samples: Float32Array;
  /** The bytes as sent: s16le PCM, or the encoded stream's bytes for wav/mp3/opus. */
  data: Uint8Array;
  format: StreamFormat;
  sampleRate: number;
  isLast: boolean;
  /** Set on the last chunk when the wire carries it (NDJSON, SSE, sessions); raw audio streams do not. */
  finishReason: FinishReason | null;
}

/** The closing line of an NDJSON stream (an HTTP trailer in all but name). */
export interface StreamSummary {
  finishReason: FinishReason;
  sampleRate: number;
  /** Seconds of audio streamed. */
  duration: number;
  chunks: number;
}

/** A voice saved in the gateway's library; `voiceId` is what to pass wherever a voice is expected. */
export interface Voice {
  id: string;
  voiceId: string;
  name: string | null;
  refText: string | null;
  xVectorOnly: boolean;
  /** Seconds of the reference clip. */
  durationS: number;
  /** Unix time, seconds. */
  createdAt: number;
}

export interface Speaker {
  name: string;
  description: string;
  nativeLanguage: string;
  dialect: string | null;
}

export interface Language {
  code: string;
  name: string;
  iso6391: string | null;
}

export interface HealthStatus {
  ok: boolean;
  status: string;
  details: Record<string, unknown>;
}

export interface ReadyStatus extends HealthStatus {
  ready: boolean;
  server: boolean;
  models: Record<string, boolean>;
}
