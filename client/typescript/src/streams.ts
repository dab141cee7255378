/**
 * Streams as async iterables of typed chunks, parsed from the gateway's three stream encodings:
 *
 * - NDJSON (`/synthesize/stream`): `{"type": "chunk", "sequence", "audio" (base64 s16le), "sample_rate",
 *   "is_last", "finish_reason"}` lines, then `{"type": "done", "finish_reason", "sample_rate",
 *   "duration", "chunks"}`; an error after the first line arrives as a line `{"error": {...}}`;
 * - raw audio (`stream_format: "audio"`, `/v1/audio/speech`): the encoded bytes as they come; the
 *   finish reason is not on the wire, so the last chunk is an empty one with `isLast` and no reason;
 * - SSE (`/v1/audio/speech` with `stream_format: "sse"`): `speech.audio.delta` events with base64 bytes,
 *   then `speech.audio.done` with the finish reason, or an `error` event.
 */

import { Pcm16Splitter, SAMPLE_RATE, WAV_HEADER_BYTES, base64ToBytes, concatBytes, concatSamples } from "./audio.js";
import { APIConnectionError, APIUserAbortError, Qwen3TTSError, errorFromEvent } from "./errors.js";
import type { StreamBody } from "./http.js";
import type { AudioChunk, FinishReason, StreamFormat, StreamSummary } from "./types.js";

const NO_SAMPLES = new Float32Array(0);
const NO_BYTES = new Uint8Array(0);

export interface CollectedAudio {
  /** All samples in order (empty for mp3/opus streams). */
  samples: Float32Array;
  /** All bytes in order: a playable file for wav/mp3/opus, raw s16le for pcm. */
  data: Uint8Array;
  sampleRate: number;
  finishReason: FinishReason | null;
  chunks: number;
}

/**
 * `for await (const chunk of stream)`; the request is sent when iteration starts, so its errors
 * (422, 503, ...) surface from the first step — after the retries, before any audio. Leaving the loop
 * early (`break`, an exception) or `cancel()` closes the connection, which cancels the synthesis.
 */
export class ChunkStream implements AsyncIterable<AudioChunk> {
  /** The NDJSON stream's closing `done` line, once read. */
  summary: StreamSummary | null = null;
  private started = false;
  private cancelled = false;
  private generator: AsyncGenerator<AudioChunk, void, undefined> | null = null;
  // The request's signal: cancel() aborts it so that a read in progress ends now (a generator that is
  // awaiting a read only takes `return()` after that read), and the caller's `signal` aborts it too.
  private readonly controller = new AbortController();

  constructor(
    private readonly produce: (stream: ChunkStream, signal: AbortSignal) => AsyncGenerator<AudioChunk, void, undefined>,
    private readonly userSignal?: AbortSignal,
  ) {}

  [Symbol.asyncIterator](): AsyncGenerator<AudioChunk, void, undefined> {
    if (this.started) throw new Qwen3TTSError("a stream can be iterated only once");
    this.started = true;
    this.generator = this.run();
    return this.generator;
  }

  private async *run(): AsyncGenerator<AudioChunk, void, undefined> {
    const onAbort = (): void => this.controller.abort();
    if (this.userSignal?.aborted) onAbort();
    else this.userSignal?.addEventListener("abort", onAbort, { once: true });
    try {
      yield* this.produce(this, this.controller.signal);
    } catch (error) {
      // cancel() ended the read in progress: the loop ends as after a cancel between two chunks.
      if (!(this.cancelled && error instanceof APIUserAbortError)) throw error;
    } finally {
      this.userSignal?.removeEventListener("abort", onAbort);
    }
  }

  /** Stop early, also while a read is waiting for the gateway (a no-op once finished). */
  async cancel(): Promise<void> {
    this.cancelled = true;
    this.controller.abort();
    if (!this.started) {
      this.started = true;
      return;
    }
    await this.generator?.return(undefined);
  }

  /** Read the whole stream. */
  async collect(): Promise<CollectedAudio> {
    const samples: Float32Array[] = [];
    const data: Uint8Array[] = [];
    let sampleRate = SAMPLE_RATE;
    let finishReason: FinishReason | null = null;
    let chunks = 0;
    for await (const chunk of this) {
      samples.push(chunk.samples);
      data.push(chunk.data);
      sampleRate = chunk.sampleRate;
      finishReason = chunk.finishReason ?? finishReason;
      chunks += 1;
    }
    return { samples: concatSamples(samples), data: concatBytes(data), sampleRate, finishReason, chunks };
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function parseLine(line: string, body: StreamBody): Record<string, unknown> {
  let payload: unknown;
  try {
    payload = JSON.parse(line);
  } catch {
    payload = undefined;
  }
  if (!isRecord(payload)) {
    throw new Qwen3TTSError(`the gateway sent a malformed stream line: ${line.slice(0, 80)}`, { request: body.request });
  }
  if ("error" in payload) throw errorFromEvent(payload, body.request);
  return payload;
}

function reason(value: unknown): FinishReason | null {
  return typeof value === "string" && value ? value : null;
}

/** The chunks of an NDJSON body; `onSummary` gets the closing `done` line. */
export async function* ndjsonChunks(
  body: StreamBody,
  onSummary: (summary: StreamSummary) => void,
): AsyncGenerator<AudioChunk, void, undefined> {
  let count = 0;
  let ended = false;
  try {
    for await (const line of body.lines()) {
      if (!line.trim()) continue;
      const payload = parseLine(line, body);
      if (payload.type === "done") {
        onSummary({
          finishReason: reason(payload.finish_reason) ?? "unknown",
          sampleRate: Number(payload.sample_rate ?? SAMPLE_RATE),
          duration: Number(payload.duration ?? 0),
          chunks: Number(payload.chunks ?? count),
        });
        continue;
      }
      if (ended) throw new Qwen3TTSError("the gateway sent audio after the last chunk", { request: body.request });
      const data = base64ToBytes(typeof payload.audio === "string" ? payload.audio : "");
      const chunk: AudioChunk = {
        sequence: Number(payload.sequence ?? count),
        samples: new Pcm16Splitter().push(data),
        data,
        format: "pcm",
        sampleRate: Number(payload.sample_rate ?? SAMPLE_RATE),
        isLast: payload.is_last === true,
        finishReason: reason(payload.finish_reason),
      };
      count += 1;
      ended = chunk.isLast;
      yield chunk;
    }
    if (!ended) {
      throw new APIConnectionError(`the stream ended after ${count} chunk(s) without the last one`, {
        request: body.request,
      });
    }
  } finally {
    await body.cancel();
  }
}

/** Decodes the samples of a pcm or wav byte stream (skipping the wav header); none for mp3/opus. */
export class StreamSamples {
  private readonly splitter: Pcm16Splitter | null;
  private headerLeft: number;

  constructor(readonly format: StreamFormat) {
    this.splitter = format === "pcm" || format === "wav" ? new Pcm16Splitter() : null;
    this.headerLeft = format === "wav" ? WAV_HEADER_BYTES : 0;
  }

  push(bytes: Uint8Array): Float32Array {
    if (!this.splitter) return NO_SAMPLES;
    let pcm = bytes;
    if (this.headerLeft > 0) {
      const skip = Math.min(this.headerLeft, pcm.byteLength);
      pcm = pcm.subarray(skip);
      this.headerLeft -= skip;
    }
    return this.splitter.push(pcm);
  }
}

function sampleRateOf(body: StreamBody): number {
  const rate = Number(body.response.headers.get("x-sample-rate"));
  return Number.isInteger(rate) && rate > 0 ? rate : SAMPLE_RATE;
}

/** The chunks of a raw audio body, then an empty last chunk (raw streams carry no finish reason). */
export async function* rawAudioChunks(body: StreamBody, format: StreamFormat): AsyncGenerator<AudioChunk, void, undefined> {
  const sampleRate = sampleRateOf(body);
  const decoder = new StreamSamples(format);
  let sequence = 0;
  try {
    for (;;) {
      const data = await body.read();
      if (data === null) break;
      if (!data.byteLength) continue;
      yield { sequence: sequence++, samples: decoder.push(data), data, format, sampleRate, isLast: false, finishReason: null };
    }
    yield { sequence, samples: NO_SAMPLES, data: NO_BYTES, format, sampleRate, isLast: true, finishReason: null };
  } finally {
    await body.cancel();
  }
}

/** The chunks of an SSE body (`/v1/audio/speech` with `stream_format: "sse"`). */
export async function* sseChunks(body: StreamBody, format: StreamFormat): AsyncGenerator<AudioChunk, void, undefined> {
  const sampleRate = sampleRateOf(body);
  const decoder = new StreamSamples(format);
  let sequence = 0;
  let data: string[] = [];
  try {
    for await (const line of body.lines()) {
      if (line.startsWith("data:")) {
        data.push(line.slice(5).trimStart());
        continue;
      }
      if (line !== "" || !data.length) continue; // comments, other fields; a blank line ends an event
      const event = parseLine(data.join("\n"), body);
      data = [];
      if (event.type === "speech.audio.delta") {
        const bytes = base64ToBytes(typeof event.audio === "string" ? event.audio : "");
        yield { sequence: sequence++, samples: decoder.push(bytes), data: bytes, format, sampleRate, isLast: false, finishReason: null };
      } else if (event.type === "speech.audio.done") {
        const finishReason = reason(event.finish_reason);
        yield { sequence, samples: NO_SAMPLES, data: NO_BYTES, format, sampleRate, isLast: true, finishReason };
        return;
      } else if (event.type === "error") {
        throw errorFromEvent(event, body.request);
      }
    }
    throw new APIConnectionError(`the event stream ended after ${sequence} chunk(s) without speech.audio.done`, {
      request: body.request,
    });
  } finally {
    await body.cancel();
  }
}
