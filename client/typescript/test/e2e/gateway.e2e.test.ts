/**
 * End to end, no fakes: this client -> the real gateway -> gRPC -> the real tritonserver with the project's
 * models. tests/e2e/test_typescript_client.py starts both (the repository's pytest fixtures) and runs
 * this file with:
 *
 *   QWEN3_TTS_E2E_BASE_URL   the gateway's URL
 *   QWEN3_TTS_E2E_API_KEY    the key the gateway requires
 *   QWEN3_TTS_E2E_REFERENCE  a reference clip (WAV file) for cloning
 *
 * Without QWEN3_TTS_E2E_BASE_URL every test is skipped. Requests are kept short (`maxNewTokens`) so the
 * tiny CPU checkpoints answer in seconds.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import {
  APIUserAbortError,
  AuthenticationError,
  NotFoundError,
  Qwen3TTSClient,
  Qwen3TTSProvider,
  UnknownVoiceError,
  UnprocessableEntityError,
  type AudioChunk,
} from "../../src/index.js";

const BASE_URL = process.env.QWEN3_TTS_E2E_BASE_URL ?? "";
const API_KEY = process.env.QWEN3_TTS_E2E_API_KEY || null;
const REFERENCE = process.env.QWEN3_TTS_E2E_REFERENCE ?? "";
const SKIP = BASE_URL ? false : "QWEN3_TTS_E2E_BASE_URL is not set (run tests/e2e/test_typescript_client.py)";

const RATE = 24_000;
const FINISH_REASONS = ["stop", "length", "repetition"];
const SHORT = { maxNewTokens: 16, seed: 1234 } as const;
const TIMEOUT = { timeout: 300_000 };

const client = new Qwen3TTSClient({ baseUrl: BASE_URL || "http://127.0.0.1:9", apiKey: API_KEY, timeoutMs: 300_000, maxRetries: 1 });
const text = (bytes: Uint8Array, start: number, end: number): string => String.fromCharCode(...bytes.subarray(start, end));
const reference = (): Uint8Array => new Uint8Array(readFileSync(REFERENCE));

/** The samples of a 16-bit mono WAV file, checked as such. */
function wavSamples(bytes: Uint8Array): number {
  assert.equal(text(bytes, 0, 4), "RIFF");
  assert.equal(text(bytes, 8, 12), "WAVE");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  assert.equal(view.getUint32(24, true), RATE);
  return (bytes.byteLength - 44) / 2;
}

describe("the TypeScript client against the real gateway and Triton", { skip: SKIP }, () => {
  test("ready and healthy", TIMEOUT, async () => {
    const ready = await client.ready();
    assert.ok(ready.ready, JSON.stringify(ready.details));
    assert.ok(Object.values(ready.models).every(Boolean));
    assert.equal((await client.health()).ok, true);
  });

  test("speak: wav with its metadata, and mp3", TIMEOUT, async () => {
    const wav = await client.speak("Hello from TypeScript.", { voice: "vivian", language: "english", responseFormat: "wav", ...SHORT });
    const samples = wavSamples(wav.audio);
    assert.ok(samples > 0);
    assert.equal(wav.sampleRate, RATE);
    assert.ok(FINISH_REASONS.includes(wav.finishReason ?? ""), String(wav.finishReason));
    assert.ok(Math.abs((wav.duration ?? 0) - samples / RATE) < 1e-3);
    assert.equal(wav.contentType, "audio/wav");

    const mp3 = await client.speak("Hello in mp3.", { speaker: "ryan", responseFormat: "mp3", ...SHORT });
    assert.equal(mp3.contentType, "audio/mpeg");
    assert.ok(mp3.audio.byteLength > 100);
    // An MPEG audio frame starts with 11 set sync bits (libsndfile writes no ID3 tag).
    assert.ok(mp3.audio[0] === 0xff && ((mp3.audio[1] ?? 0) & 0xe0) === 0xe0, "mp3 frame sync");
  });

  test("the same seed gives the same audio", TIMEOUT, async () => {
    const first = await client.speak("Same words.", { voice: "ryan", responseFormat: "pcm", ...SHORT });
    const second = await client.speak("Same words.", { voice: "ryan", responseFormat: "pcm", ...SHORT });
    assert.deepEqual(first.audio, second.audio);
  });

  test("NDJSON stream: typed chunks in order, the last one with the finish reason, then the summary", TIMEOUT, async () => {
    const stream = client.stream("Streaming words from Node.", { voice: "serena", ...SHORT });
    const chunks: AudioChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.ok(chunks.length > 0);
    assert.deepEqual(chunks.map((c) => c.sequence), [...chunks.keys()]);
    assert.deepEqual(chunks.map((c) => c.isLast), chunks.map((_, i) => i === chunks.length - 1));
    const last = chunks.at(-1);
    assert.ok(FINISH_REASONS.includes(last?.finishReason ?? ""));
    assert.ok(chunks.every((c) => c.sampleRate === RATE && c.samples instanceof Float32Array && c.samples.length * 2 === c.data.byteLength));
    assert.ok(chunks.every((c) => c.samples.every((x) => x >= -1 && x <= 1)));
    assert.equal(stream.summary?.chunks, chunks.length);
    assert.equal(stream.summary?.finishReason, last?.finishReason);
    const samples = chunks.reduce((n, c) => n + c.samples.length, 0);
    assert.ok(Math.abs((stream.summary?.duration ?? 0) - samples / RATE) < 2e-3);
  });

  test("raw audio streams: pcm samples and a wav with a streaming header", TIMEOUT, async () => {
    const pcm = await client.streamAudio("Raw words.", { voice: "aiden", format: "pcm", ...SHORT }).collect();
    assert.ok(pcm.samples.length > 0);
    assert.equal(pcm.data.byteLength, pcm.samples.length * 2);
    assert.equal(pcm.sampleRate, RATE);
    const same = await client.speak("Raw words.", { voice: "aiden", responseFormat: "pcm", ...SHORT });
    assert.deepEqual(pcm.data, same.audio, "the stream's bytes are the file's bytes");

    const wav = await client.streamAudio("Raw words.", { voice: "aiden", format: "wav", ...SHORT }).collect();
    assert.equal(text(wav.data, 0, 4), "RIFF");
    assert.deepEqual(wav.samples, pcm.samples);
  });

  test("leaving a stream early cancels it and the gateway goes on serving", TIMEOUT, async () => {
    for await (const chunk of client.stream("A longer sentence that we stop listening to.", { voice: "dylan", maxNewTokens: 64 })) {
      assert.equal(chunk.sequence, 0);
      break;
    }
    const controller = new AbortController();
    const aborted = client.stream("Another one we abort.", { voice: "dylan", maxNewTokens: 64, signal: controller.signal });
    await assert.rejects(
      (async () => {
        for await (const _chunk of aborted) controller.abort();
      })(),
      APIUserAbortError,
    );
    assert.ok((await client.speak("Still here.", { voice: "dylan", ...SHORT })).audio.byteLength > 44);
  });

  test("clone from a real reference clip", TIMEOUT, async () => {
    const result = await client.clone("Cloned words.", { referenceAudio: reference(), refText: "Some reference words.", ...SHORT });
    assert.ok(wavSamples(result.audio) > 0);
    assert.ok(FINISH_REASONS.includes(result.finishReason ?? ""));
  });

  test("design a voice from a description", TIMEOUT, async () => {
    const result = await client.design("Designed voice.", { instruct: "a calm, low male voice", responseFormat: "wav", ...SHORT });
    assert.ok(wavSamples(result.audio) > 0);
  });

  test("voice library: save, list, speak, get, delete", TIMEOUT, async () => {
    const voice = await client.createVoice({ referenceAudio: reference(), refText: "Some reference words.", name: "ts-e2e" });
    try {
      assert.match(voice.id, /^[0-9a-f]{16}$/);
      assert.equal(voice.voiceId, `qwen3-clone-${voice.id}`);
      assert.equal(voice.name, "ts-e2e");
      assert.ok(voice.durationS > 3);
      assert.ok((await client.listVoices()).some((v) => v.id === voice.id));
      const spoken = await client.speak("In the saved voice.", { voice: voice.voiceId, ...SHORT });
      assert.equal(spoken.sampleRate, RATE);
      assert.equal((await client.getVoice(voice.voiceId)).id, voice.id);
    } finally {
      await client.deleteVoice(voice.id);
    }
    await assert.rejects(client.getVoice(voice.id), (error: unknown) => error instanceof NotFoundError && error.status === 404);
    assert.ok(!(await client.listVoices()).some((v) => v.id === voice.id));
  });

  test("the OpenAI route: a whole file, and SSE with the finish reason", TIMEOUT, async () => {
    const file = await client.createSpeech({ model: "qwen3-tts", input: "OpenAI words.", voice: "vivian", response_format: "wav", ...SHORT });
    assert.ok(wavSamples(file.audio) > 0);
    const chunks: AudioChunk[] = [];
    for await (const chunk of client.streamSpeech({ input: "OpenAI words.", voice: "vivian", response_format: "pcm", stream_format: "sse", ...SHORT })) {
      chunks.push(chunk);
    }
    assert.ok(chunks.length >= 2);
    assert.ok(chunks.at(-1)?.isLast && FINISH_REASONS.includes(chunks.at(-1)?.finishReason ?? ""));
    const samples = chunks.reduce((n, c) => n + c.samples.length, 0);
    assert.equal(samples * 2 + 44, file.audio.byteLength, "the SSE stream holds the same audio as the file");
  });

  test("a voice-agent session: fragments in, audio and events out", TIMEOUT, async () => {
    const session = await client.session({ voice: "ryan", language: "english", lookaheadTokens: 2, doSample: false, maxNewTokens: 40 });
    try {
      assert.match(session.sessionId ?? "", /.+/);
      assert.equal(session.sampleRate, RATE);
      for (const fragment of ["Hel", "lo", " there", ", friend"]) session.sendText(fragment);
      session.sendText("x".repeat(5000)); // over max_text_length: refused, the session goes on
      session.end(".");
      const kinds: string[] = [];
      let samples = 0;
      for await (const event of session.events()) {
        kinds.push(event.type);
        if (event.type === "audio") samples += event.chunk.samples.length;
      }
      assert.ok(samples > 0);
      assert.equal(kinds.at(-1), "done");
      assert.ok(kinds.includes("refused"));
      assert.equal(session.refused[0]?.status, 422);
      assert.ok(FINISH_REASONS.includes(session.finishReason ?? ""));
      assert.equal(session.summary?.textChars, "Hello there, friend.".length);
      assert.ok(Math.abs((session.summary?.duration ?? 0) - samples / RATE) < 2e-3);
    } finally {
      session.close();
    }
  });

  test("a session in mp3 with JSON chunks, and cancel", TIMEOUT, async () => {
    const mp3 = await client.session({ voice: "vivian", format: "mp3", jsonChunks: true, doSample: false, maxNewTokens: 24 });
    mp3.end("Encoded words.");
    const collected = await mp3.collect();
    mp3.close();
    assert.ok(collected.data.byteLength > 0 && collected.samples.length === 0);
    assert.equal(collected.data[0], 0xff);

    const cancelled = await client.session({ voice: "ryan", doSample: false, maxNewTokens: 400 });
    cancelled.sendText("Words that will never be spoken in full");
    cancelled.cancel();
    const chunks: AudioChunk[] = [];
    for await (const chunk of cancelled) chunks.push(chunk);
    cancelled.close();
    assert.equal(cancelled.finishReason, "cancelled");
    assert.ok(chunks.at(-1)?.isLast && chunks.at(-1)?.finishReason === "cancelled");
  });

  test("typed errors: 422 unknown speaker, 404 unknown clone, 401 wrong key", TIMEOUT, async () => {
    await assert.rejects(client.speak("Hi.", { speaker: "nobody", ...SHORT }), (error: unknown) => {
      assert.ok(error instanceof UnprocessableEntityError, String(error));
      assert.equal(error.status, 422);
      assert.match(error.message, /vivian/);
      assert.equal(error.param, "speaker");
      assert.equal(error.errors[0]?.loc, "body.speaker");
      assert.deepEqual(error.request, { operation: "speak", method: "POST", url: `${BASE_URL}/synthesize`, attempt: 0 });
      return true;
    });
    await assert.rejects(client.session({ voice: "nobody" }), (error: unknown) => error instanceof UnprocessableEntityError && /vivian/.test(error.message));
    await assert.rejects(client.session({ voice: "qwen3-clone-0000000000000000" }), (error: unknown) => error instanceof NotFoundError && error.status === 404);
    await assert.rejects(client.speak("Hi.", { voice: "qwen3-clone-0000000000000000", ...SHORT }), NotFoundError);
    if (API_KEY) {
      const wrongKey = new Qwen3TTSClient({ baseUrl: BASE_URL, apiKey: "not-the-key", maxRetries: 0 });
      await assert.rejects(wrongKey.listVoices(), (error: unknown) => error instanceof AuthenticationError && error.status === 401);
      await assert.rejects(wrongKey.session({ voice: "ryan" }), AuthenticationError);
    }
  });

  test("the provider: initialize, voices, synthesize, stream, health, cost, metrics", TIMEOUT, async () => {
    const provider = new Qwen3TTSProvider({ baseUrl: BASE_URL, apiKey: API_KEY, timeoutMs: 300_000, pricePerSecond: 0.01 });
    await provider.initialize();
    const voices = await provider.getAvailableVoices();
    const vivian = voices.find((v) => v.id === "qwen3-vivian");
    assert.equal(vivian?.kind, "premium");
    assert.ok(vivian?.languages.includes("english"));
    assert.equal(voices.filter((v) => v.kind === "premium").length, 9);

    const result = await provider.synthesize({ text: "Provider words.", voiceId: "qwen3-vivian", ...SHORT });
    assert.equal(result.sampleRate, RATE);
    assert.equal(result.voiceId, "qwen3-vivian");
    const chunks: AudioChunk[] = [];
    for await (const chunk of provider.synthesizeStream({ text: "Provider stream.", voiceId: "QWEN3-Serena", ...SHORT })) chunks.push(chunk);
    assert.ok(chunks.at(-1)?.isLast);
    await assert.rejects(provider.synthesize({ text: "Hi.", voiceId: "eleven-rachel" }), UnknownVoiceError);

    const health = await provider.healthCheck();
    assert.equal(health.status, "healthy");
    assert.ok(Object.values(health.models).every(Boolean));
    const cost = provider.estimateCost("Provider words.", result.duration ?? 0);
    assert.ok(cost.cost >= 0 && cost.currency === "USD");
    const metrics = provider.getMetrics();
    assert.equal(metrics.failures, 0);
    assert.ok(metrics.requests >= 4);
    assert.equal(metrics.circuit, "closed");
    assert.ok(metrics.audioSeconds > 0);
  });
});
