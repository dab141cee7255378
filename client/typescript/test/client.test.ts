/**
 * The client against a real local HTTP server: request bodies, auth, retries with Retry-After, timeouts,
 * cancellation, connection failures, and stream parsing across arbitrary read boundaries.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import fc from "fast-check";

import {
  APIConnectionError,
  APITimeoutError,
  APIUserAbortError,
  InternalServerError,
  NotFoundError,
  Qwen3TTSClient,
  Qwen3TTSProvider,
  RetryPolicy,
  ServiceUnavailableError,
  UnprocessableEntityError,
  base64ToBytes,
  bytesToBase64,
  encodeWav,
  float32ToPcm16,
  isSafeToResend,
  parseRetryAfter,
  pcm16ToFloat32,
} from "../src/index.js";
import { ScriptedServer, errorBody, ndjsonAnswer, sleep, wavAnswer, type ScriptedAnswer } from "./scripted-server.js";

describe("client", () => {
  let server: ScriptedServer;

  before(async () => {
    server = await ScriptedServer.start();
  });
  after(() => server.close());

  const client = (options: ConstructorParameters<typeof Qwen3TTSClient>[0] = {}): Qwen3TTSClient =>
    new Qwen3TTSClient({ baseUrl: server.url, apiKey: null, ...options });

  test("speak sends the gateway's field names, only those set, and reads the metadata headers", async () => {
    server.reset();
    server.answerInTurn(wavAnswer(new Uint8Array([1, 2, 3])));
    const result = await client({ apiKey: "secret" }).speak("Hello.", {
      voice: "vivian",
      language: "english",
      responseFormat: "wav",
      doSample: false,
      topK: 0,
      maxNewTokens: 16,
      seed: 7,
    });
    const [request] = server.requests;
    assert.equal(request?.path, "/synthesize");
    assert.deepEqual(request?.json, {
      text: "Hello.",
      voice: "vivian",
      language: "english",
      response_format: "wav",
      do_sample: false,
      top_k: 0,
      max_new_tokens: 16,
      seed: 7,
    });
    assert.equal(request?.headers.authorization, "Bearer secret");
    assert.deepEqual([...result.audio], [1, 2, 3]);
    assert.deepEqual([result.sampleRate, result.duration, result.finishReason], [24000, 0.5, "stop"]);
  });

  test("clone sends the reference clip as base64 WAV; voices are addressed by id or voice id", async () => {
    server.reset();
    server.script = (request) =>
      request.method === "DELETE" ? { status: 204 } : { status: 404, body: errorBody(404, "voice not found", "not_found_error", "voice_id") };
    await client().deleteVoice("qwen3-clone-0123456789abcdef");
    await assert.rejects(client().getVoice("0123456789abcdef"), NotFoundError);
    assert.deepEqual(server.requests.map((r) => `${r.method} ${r.path}`), [
      "DELETE /voices/0123456789abcdef",
      "GET /voices/0123456789abcdef",
    ]);
    server.reset();
    server.answerInTurn(wavAnswer());
    await client().clone("Hi.", { referenceAudio: { samples: [0, 0.5, -0.5], sampleRate: 16000 }, refText: "ref" });
    const sent = base64ToBytes(String(server.requests[0]?.json?.ref_audio));
    assert.deepEqual(sent, encodeWav([0, 0.5, -0.5], 16000));
    assert.equal(server.requests[0]?.json?.ref_text, "ref");
  });

  test("503 with Retry-After is retried after the time the server asked for", async () => {
    server.reset();
    server.answerInTurn(
      { status: 503, headers: { "retry-after": "1" }, body: errorBody(503, "queue full", "server_overloaded") },
      wavAnswer(),
    );
    const started = Date.now();
    const result = await client({ retryPolicy: new RetryPolicy({ maxRetries: 1, backoffBaseMs: 0 }) }).speak("Hi.", { voice: "ryan" });
    const elapsed = Date.now() - started;
    assert.equal(result.finishReason, "stop");
    assert.equal(server.requests.length, 2);
    assert.ok(elapsed >= 950 && elapsed < 5000, `waited ${elapsed} ms`);
  });

  test("the last error comes back when retries run out; a 422 is never retried", async () => {
    server.reset();
    server.script = () => ({ status: 503, headers: { "retry-after": "0" }, body: errorBody(503, "down", "server_overloaded") });
    await assert.rejects(client({ maxRetries: 3 }).speak("Hi.", { voice: "ryan" }), (error: unknown) => {
      assert.ok(error instanceof ServiceUnavailableError);
      assert.equal(error.retryAfter, 0);
      assert.equal(error.request?.attempt, 3);
      return true;
    });
    assert.equal(server.requests.length, 4);
    server.reset();
    server.script = () => ({ status: 422, body: errorBody(422, "unknown speaker 'x'; valid speakers: vivian", "invalid_request_error", "speaker") });
    await assert.rejects(client({ maxRetries: 3 }).speak("Hi.", { speaker: "x" }), UnprocessableEntityError);
    assert.equal(server.requests.length, 1);
  });

  test("a per-call maxRetries keeps the rest of the client's retry policy, its jitter source included", async () => {
    const jitterDraws: number[] = [];
    const random = (): number => {
      jitterDraws.push(jitterDraws.length);
      return 0; // with jitter 1: no wait at all
    };
    const down: ScriptedAnswer = { status: 503, body: errorBody(503, "down", "server_overloaded") };
    const tts = client({ retryPolicy: { maxRetries: 0, backoffBaseMs: 200, jitter: 1, random } });
    server.reset();
    server.answerInTurn(down, down, wavAnswer());
    const result = await tts.speak("Hi.", { voice: "ryan", maxRetries: 2 });
    assert.equal(result.finishReason, "stop");
    assert.equal(server.requests.length, 3);
    assert.equal(jitterDraws.length, 2, "each backoff draws its jitter from the client's random");
    server.reset();
    server.answerInTurn(down, ndjsonAnswer(1));
    assert.equal((await tts.stream("Hi.", { voice: "ryan", maxRetries: 1 }).collect()).chunks, 1);
    assert.equal(jitterDraws.length, 3);

    class FixedDelayPolicy extends RetryPolicy {
      override backoffMs(): number {
        return 7;
      }
    }
    const policy = new FixedDelayPolicy({ maxRetries: 1, backoffBaseMs: 10, maxBackoffMs: 20, jitter: 0.5, maxRetryAfterMs: 30, random });
    const perCall = policy.withMaxRetries(4);
    assert.ok(perCall instanceof FixedDelayPolicy);
    assert.deepEqual([perCall.maxRetries, perCall.backoffBaseMs, perCall.maxBackoffMs, perCall.jitter, perCall.maxRetryAfterMs], [4, 10, 20, 0.5, 30]);
    assert.equal(perCall.delayMs(0, null), 7);
    assert.equal(policy.maxRetries, 1);
    assert.throws(() => policy.withMaxRetries(-1), /maxRetries must be an integer >= 0, got -1/);
  });

  test("retryPolicy and maxRetries given together are refused; either alone, or null for one, is kept", async () => {
    // Before, the policy silently won (or, as options, was merged with the count); even a count equal to
    // the policy's is refused, so the rule does not depend on the numbers.
    const refused = /give either retryPolicy or maxRetries, not both/;
    for (const maxRetries of [0, 2, 5]) {
      assert.throws(() => client({ maxRetries, retryPolicy: new RetryPolicy({ maxRetries: 2 }) }), (error: unknown) => {
        assert.ok(error instanceof TypeError);
        assert.match(error.message, refused);
        return true;
      });
      assert.throws(() => client({ maxRetries, retryPolicy: { backoffBaseMs: 0 } }), refused);
      assert.throws(() => new Qwen3TTSProvider({ baseUrl: server.url, maxRetries, retryPolicy: {} }), refused);
    }

    const down: ScriptedAnswer = { status: 503, body: errorBody(503, "down", "server_overloaded") };
    const noRetryAfter = { maxRetryAfterMs: 0, backoffBaseMs: 0 };
    // A policy alone (an unset or null maxRetries beside it): its own count.
    for (const tts of [
      client({ retryPolicy: { maxRetries: 1, ...noRetryAfter } }),
      client({ maxRetries: undefined, retryPolicy: new RetryPolicy({ maxRetries: 1, ...noRetryAfter }) }),
      client({ maxRetries: null as unknown as number, retryPolicy: { maxRetries: 1, ...noRetryAfter } }),
    ]) {
      server.reset();
      server.answerInTurn(down, down, wavAnswer());
      await assert.rejects(tts.speak("Hi.", { voice: "ryan" }), ServiceUnavailableError);
      assert.equal(server.requests.length, 2);
    }
    // A count alone (a null policy beside it): that count; a per-call maxRetries still overrides it.
    const counted = client({ maxRetries: 0, retryPolicy: null as unknown as RetryPolicy });
    server.reset();
    server.answerInTurn(down, wavAnswer());
    await assert.rejects(counted.speak("Hi.", { voice: "ryan" }), ServiceUnavailableError);
    assert.equal(server.requests.length, 1);
    server.reset();
    server.answerInTurn(down, wavAnswer());
    assert.equal((await counted.speak("Hi.", { voice: "ryan", maxRetries: 1 })).finishReason, "stop");
    assert.equal(server.requests.length, 2);
  });

  test("a timeout is an APITimeoutError, retried like a connection failure", async () => {
    server.reset();
    server.script = () => ({ ...wavAnswer(), delayMs: 400 });
    await assert.rejects(
      client({ timeoutMs: 100, retryPolicy: new RetryPolicy({ maxRetries: 1, backoffBaseMs: 0 }) }).speak("Hi.", { voice: "ryan" }),
      (error: unknown) => error instanceof APITimeoutError && error.request?.attempt === 1,
    );
    assert.equal(server.requests.length, 2);
  });

  test("a stream that stalls between chunks times out; one that keeps coming does not", async () => {
    const lines = ndjsonAnswer(3).body as string[];
    // Four gaps of 150 ms: longer in total than the 400 ms timeout, each well within it.
    server.script = () => ({ ...ndjsonAnswer(3), pieceDelayMs: 150 });
    const slowButSteady = await client({ timeoutMs: 400, maxRetries: 0 }).stream("Hi.", { voice: "ryan" }).collect();
    assert.equal(slowButSteady.chunks, 3);
    server.script = () => ({ status: 200, body: [lines[0] ?? "", ...Array(2).fill(" ")], pieceDelayMs: 1500 });
    await assert.rejects(client({ timeoutMs: 400, maxRetries: 0 }).stream("Hi.", { voice: "ryan" }).collect(), APITimeoutError);
  });

  test("aborting rejects with APIUserAbortError at once, without retries", async () => {
    server.reset();
    server.script = () => ({ ...wavAnswer(), delayMs: 2000 });
    const controller = new AbortController();
    const started = Date.now();
    const call = client({ maxRetries: 3 }).speak("Hi.", { voice: "ryan", signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await assert.rejects(call, APIUserAbortError);
    assert.ok(Date.now() - started < 1000);
    assert.equal(server.requests.length, 1);
    await assert.rejects(client().speak("Hi.", { voice: "ryan", signal: AbortSignal.abort() }), APIUserAbortError);
  });

  test("aborting a stream mid-way closes the connection", async () => {
    server.script = () => ({ ...ndjsonAnswer(50), pieceDelayMs: 20 });
    const controller = new AbortController();
    const received: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const chunk of client().stream("Hi.", { voice: "ryan", signal: controller.signal })) {
          received.push(chunk.sequence);
          if (chunk.sequence === 2) controller.abort();
        }
      })(),
      APIUserAbortError,
    );
    assert.deepEqual(received, [0, 1, 2]);
  });

  test("breaking out of a stream cancels it", async () => {
    server.script = () => ({ ...ndjsonAnswer(50), pieceDelayMs: 20 });
    const stream = client().stream("Hi.", { voice: "ryan" });
    for await (const chunk of stream) {
      if (chunk.sequence === 1) break;
    }
    await sleep(50);
    assert.ok(server.requests.length >= 1);
  });

  test("cancel() while a read waits for the gateway closes the connection at once, and the loop ends", async () => {
    const lines = ndjsonAnswer(3).body as string[];
    for (const answer of [
      { status: 200, body: lines, pieceDelayMs: 2000 } as ScriptedAnswer, // the first chunk, then a long wait for the next
      { ...ndjsonAnswer(3), delayMs: 2000 }, // a long wait for the response itself (a queued request)
    ]) {
      server.script = () => answer;
      const stream = client({ timeoutMs: 10_000 }).stream("Hi.", { voice: "ryan" });
      const received: number[] = [];
      const reading = (async () => {
        for await (const chunk of stream) received.push(chunk.sequence);
      })();
      await sleep(200);
      const started = Date.now();
      await stream.cancel();
      await reading;
      assert.ok(Date.now() - started < 1000, `cancel took ${Date.now() - started} ms`);
      assert.deepEqual(received, answer.delayMs ? [] : [0]);
    }
  });

  test("createVoice is sent again only when it cannot have been carried out (as in the Python client)", async () => {
    const voice: ScriptedAnswer = { status: 201, body: JSON.stringify({ id: "0123456789abcdef", name: "v" }) };
    const create = (options: { timeoutMs?: number } = {}): Promise<unknown> =>
      client({ retryPolicy: new RetryPolicy({ maxRetries: 2, backoffBaseMs: 0 }), ...options }).createVoice({
        referenceAudio: new Uint8Array([82, 73, 70, 70]),
        refText: "ref",
      });
    // A 500 or a timeout may have stored the voice already: a second POST would store it twice.
    server.reset();
    server.answerInTurn({ status: 500, body: errorBody(500, "internal error", "server_error") }, voice);
    await assert.rejects(create(), InternalServerError);
    assert.equal(server.requests.length, 1);
    server.reset();
    server.answerInTurn({ ...voice, delayMs: 300 }, voice);
    await assert.rejects(create({ timeoutMs: 100 }), APITimeoutError);
    assert.equal(server.requests.length, 1);
    // 408, 429 and 503 refuse it: sent again.
    for (const status of [408, 429, 503]) {
      server.reset();
      server.answerInTurn({ status, headers: { "retry-after": "0" }, body: errorBody(status, "not now") }, voice);
      await create();
      assert.equal(server.requests.length, 2, `requests after ${status}`);
    }
    // Nothing listening: the request never left, so it is retried (attempt 2 is the last retry).
    const spare = await ScriptedServer.start(); // a port just freed: connections to it are refused
    const refusedUrl = spare.url;
    await spare.close();
    const dead = new Qwen3TTSClient({ baseUrl: refusedUrl, retryPolicy: new RetryPolicy({ maxRetries: 2, backoffBaseMs: 0 }) });
    await assert.rejects(dead.createVoice({ referenceAudio: new Uint8Array([1]) }), (error: unknown) => {
      assert.ok(error instanceof APIConnectionError && !error.requestSent, String(error));
      assert.equal(error.request?.attempt, 2);
      return true;
    });
    assert.ok(isSafeToResend(new ServiceUnavailableError("busy", { status: 503 })));
    assert.ok(!isSafeToResend(new InternalServerError("bad gateway", { status: 502 })));
    assert.ok(!isSafeToResend(new APITimeoutError("read timeout")));
    assert.ok(!isSafeToResend(new APIConnectionError("reset")));
  });

  test("no server is an APIConnectionError naming the URL", async () => {
    const dead = new Qwen3TTSClient({ baseUrl: "http://127.0.0.1:9", maxRetries: 0 });
    await assert.rejects(dead.health(), (error: unknown) => {
      assert.ok(error instanceof APIConnectionError && !(error instanceof APITimeoutError));
      assert.match(error.message, /127\.0\.0\.1:9/);
      assert.equal(error.status, null);
      return true;
    });
  });

  test("an error body cut short keeps its status and the part of the message that came, and is retried as that status", async () => {
    // As in the Python client: a connection dropped mid-body must not hide the 503 behind a connection error.
    const part = errorBody(503, "engine busy, try again", "server_overloaded").slice(0, 20);
    const cut: ScriptedAnswer = { status: 503, headers: { "retry-after": "0" }, body: [part], pieceDelayMs: 20, dropAfterBody: true };
    server.reset();
    server.answerInTurn(cut);
    await assert.rejects(client({ maxRetries: 0 }).speakers(), (error: unknown) => {
      assert.ok(error instanceof ServiceUnavailableError, String(error));
      assert.equal(error.status, 503);
      assert.equal(error.retryAfter, 0);
      assert.equal(error.message, `${part} (the connection dropped while the error was read)`);
      return true;
    });
    server.reset();
    server.answerInTurn(cut, ndjsonAnswer(1));
    const collected = await client({ retryPolicy: new RetryPolicy({ maxRetries: 1, backoffBaseMs: 0 }) }).stream("Hi.", { voice: "ryan" }).collect();
    assert.equal(collected.chunks, 1);
    assert.equal(server.requests.length, 2);
  });

  test("a stream whose connection drops after audio is not sent again, and says where it broke", async () => {
    const lines = ndjsonAnswer(3).body as string[];
    server.reset();
    server.answerInTurn({ status: 200, body: lines.slice(0, 1), pieceDelayMs: 20, dropAfterBody: true }, ndjsonAnswer(3));
    const received: number[] = [];
    const stream = client({ retryPolicy: new RetryPolicy({ maxRetries: 2, backoffBaseMs: 0 }) }).stream("Hi.", { voice: "ryan" });
    await assert.rejects(
      (async () => {
        for await (const chunk of stream) received.push(chunk.sequence);
      })(),
      (error: unknown) => {
        assert.ok(error instanceof APIConnectionError && !(error instanceof APITimeoutError), String(error));
        assert.match(error.message, /^the connection to the gateway at \S+\/synthesize\/stream dropped while reading the stream: /);
        return true;
      },
    );
    assert.deepEqual(received, [0]);
    assert.equal(server.requests.length, 1);
  });

  test("a stream cut before its last chunk is an APIConnectionError", async () => {
    const lines = ndjsonAnswer(3).body as string[];
    server.script = () => ({ status: 200, body: lines.slice(0, 2) });
    await assert.rejects(client({ maxRetries: 0 }).stream("Hi.", { voice: "ryan" }).collect(), /without the last one/);
  });

  test("NDJSON parses the same whatever the read boundaries", async () => {
    const whole = Buffer.from((ndjsonAnswer(5, "length").body as string[]).join(""));
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(fc.integer({ min: 1, max: whole.length - 1 }), { maxLength: 12 }), async (cuts) => {
        const bounds = [0, ...cuts.sort((a, b) => a - b), whole.length];
        const pieces = bounds.slice(1).map((end, i) => whole.subarray(bounds[i], end));
        server.script = () => ({ status: 200, body: pieces });
        const stream = client({ maxRetries: 0 }).stream("Hi.", { voice: "ryan" });
        const chunks = [];
        for await (const chunk of stream) chunks.push(chunk);
        assert.deepEqual(chunks.map((c) => c.sequence), [0, 1, 2, 3, 4]);
        assert.deepEqual(chunks.map((c) => c.isLast), [false, false, false, false, true]);
        assert.equal(chunks.at(-1)?.finishReason, "length");
        assert.deepEqual([...(chunks[0]?.samples ?? [])], [0.5, -0.5]);
        assert.equal(stream.summary?.chunks, 5);
      }),
      { numRuns: 100 },
    );
  });

  test("raw PCM and WAV streams give the samples whatever the read boundaries", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: -32768, max: 32767 }), { minLength: 1, maxLength: 200 }),
        fc.constantFrom<"pcm" | "wav">("pcm", "wav"),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 10 }),
        async (values, format, sizes) => {
          const pcm = Buffer.alloc(values.length * 2);
          values.forEach((v, i) => pcm.writeInt16LE(v, i * 2));
          const whole = format === "wav" ? Buffer.concat([Buffer.from(encodeWav([], 24000)), pcm]) : pcm;
          const pieces: Buffer[] = [];
          for (let offset = 0, i = 0; offset < whole.length; i++) {
            const size = sizes[i % sizes.length] ?? 1;
            pieces.push(whole.subarray(offset, offset + size));
            offset += size;
          }
          server.script = () => ({ status: 200, headers: { "content-type": "audio/pcm", "x-sample-rate": "24000" }, body: pieces });
          const collected = await client({ maxRetries: 0 }).streamAudio("Hi.", { voice: "ryan", format }).collect();
          assert.deepEqual([...collected.samples], values.map((v) => v / 32768));
          assert.deepEqual(Buffer.from(collected.data), whole);
        },
      ),
      { numRuns: 100 },
    );
  });

  test("SSE from the OpenAI route: deltas, then the finish reason on the last chunk", async () => {
    server.reset();
    const event = (payload: object): string => `data: ${JSON.stringify(payload)}\n\n`;
    server.script = () => ({
      status: 200,
      headers: { "content-type": "text/event-stream" },
      body: [
        event({ type: "speech.audio.delta", audio: bytesToBase64(new Uint8Array([0, 64])) }),
        event({ type: "speech.audio.delta", audio: bytesToBase64(new Uint8Array([0, 192])) }),
        event({ type: "speech.audio.done", usage: {}, finish_reason: "repetition" }),
      ],
    });
    const chunks = [];
    for await (const chunk of client().streamSpeech({ input: "Hi.", voice: "ryan", response_format: "pcm", stream_format: "sse" })) {
      chunks.push(chunk);
    }
    assert.deepEqual(server.requests[0]?.json, { model: "qwen3-tts", input: "Hi.", voice: "ryan", response_format: "pcm", stream_format: "sse" });
    assert.deepEqual(chunks.map((c) => [c.sequence, c.isLast, c.finishReason]), [[0, false, null], [1, false, null], [2, true, "repetition"]]);
    assert.deepEqual([...(chunks[0]?.samples ?? [])], [0.5]);
  });

  test("formats are checked before anything is sent, naming the valid ones", () => {
    assert.throws(() => client().streamAudio("Hi.", { voice: "ryan", format: "flac" as "pcm" }), /streamable: pcm, wav, mp3, opus/);
    assert.rejects(client().speak("Hi.", { voice: "ryan", responseFormat: "ogg" as "wav" }), /supported: wav, flac, mp3, opus, pcm/);
  });
});

describe("audio and headers", () => {
  test("base64 and PCM round-trip", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        assert.deepEqual(base64ToBytes(bytesToBase64(bytes)), bytes);
        const even = bytes.subarray(0, bytes.length & ~1);
        const view = new DataView(even.buffer, even.byteOffset, even.byteLength);
        const ints = Array.from({ length: even.length / 2 }, (_, i) => view.getInt16(i * 2, true));
        assert.deepEqual([...pcm16ToFloat32(even)], ints.map((v) => Math.fround(v / 32768)));
        const symmetric = ints.map((v) => Math.max(v, -32767));
        const back = new DataView(float32ToPcm16(symmetric.map((v) => v / 32767)).buffer);
        assert.deepEqual(symmetric.map((_, i) => back.getInt16(i * 2, true)), symmetric);
      }),
      { numRuns: 100 },
    );
  });

  test("Retry-After: seconds, HTTP dates, nonsense", () => {
    assert.equal(parseRetryAfter("3"), 3);
    assert.equal(parseRetryAfter(" 1.5 "), 1.5);
    assert.equal(parseRetryAfter("-1"), null);
    assert.equal(parseRetryAfter("soon"), null);
    assert.equal(parseRetryAfter(null), null);
    // Malformed values are no delay (the backoff applies), as in the Python client: never "retry at once".
    for (const junk of ["inf", "1e3", "+3", ".5", "nan", "May 1", "x 2020", "2 s"]) assert.equal(parseRetryAfter(junk), null, junk);
    const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
    assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:30 GMT", () => now), 30);
    assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:27:00 GMT", () => now), 0);
    // The other two HTTP-date forms (RFC 850, asctime: no zone, always GMT) and a numeric zone.
    assert.equal(parseRetryAfter("Wednesday, 21-Oct-15 07:28:30 GMT", () => now), 30);
    assert.equal(parseRetryAfter("Wed Oct 21 07:28:30 2015", () => now), 30);
    assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:30 -0000", () => now), 30);
    const policy = new RetryPolicy({ maxRetryAfterMs: 10_000, jitter: 0, backoffBaseMs: 100 });
    assert.equal(policy.delayMs(0, 3), 3000);
    assert.equal(policy.delayMs(0, 3600), 10_000);
    assert.equal(policy.delayMs(2, null), 400);
  });
});
