/**
 * Voice-id routing, as properties: generated `qwen3-{timbre}` / `qwen3-clone-{id}` ids reach the right
 * endpoint with the right `voice` over real HTTP; anything else is rejected before any request, with the
 * valid patterns named.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import fc from "fast-check";

import { Qwen3TTSProvider, TIMBRES, UnknownVoiceError, routeVoice } from "../src/index.js";
import { HEALTH_OK, ScriptedServer, ndjsonAnswer, wavAnswer } from "./scripted-server.js";

const RUNS = { numRuns: 150 };
const HEX = "0123456789abcdefABCDEF".split("");

/** Random upper/lower case of an ASCII string. */
const anyCase = (text: string): fc.Arbitrary<string> =>
  fc.array(fc.boolean(), { minLength: text.length, maxLength: text.length }).map((upper) =>
    [...text].map((ch, i) => (upper[i] ? ch.toUpperCase() : ch)).join(""),
  );

const knownTimbre = fc.constantFrom(...TIMBRES);
/** Timbre-shaped names the gateway might add later: a letter, then letters, digits, underscores. */
const timbreShaped = fc
  .tuple(
    fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz".split("")),
    fc.string({ unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz0123456789_".split("")), maxLength: 12 }),
  )
  .map(([first, rest]) => first + rest)
  .filter((name) => name !== "clone");
const timbre = fc.oneof(knownTimbre, timbreShaped);
const libraryId = fc.string({ unit: fc.constantFrom(...HEX), minLength: 16, maxLength: 16 });

/** The oracle, written independently of routing.ts from the two patterns. */
function isValidVoiceId(id: string): boolean {
  return /^qwen3-clone-[0-9a-f]{16}$/i.test(id) || (/^qwen3-[a-z][a-z0-9_]*$/i.test(id) && !/^qwen3-clone$/i.test(id));
}

const nearMisses = fc.oneof(
  timbre.map((t) => t), // no prefix
  timbre.map((t) => `qwen3_${t}`),
  timbre.map((t) => `qwen-${t}`),
  timbre.map((t) => `qwen3-${t}-x y`),
  timbre.map((t) => ` qwen3-${t}`),
  timbre.map((t) => `qwen3-${t}\n`),
  fc.constantFrom("", "qwen3-", "qwen3-clone", "qwen3-clone-", "QWEN3-CLONE", "qwen3-1abc", "qwen3-_x", "qwen3-\u212Aelvin"),
  libraryId.map((id) => `qwen3-clone-${id.slice(0, 15)}`),
  libraryId.map((id) => `qwen3-clone-${id}0`),
  libraryId.map((id) => `qwen3-clone-${id.slice(0, 15)}g`),
  libraryId.map((id) => `qwen3-clone${id}`),
  libraryId.map((id) => `clone-${id}`),
);
const invalidVoiceId = fc.oneof(nearMisses, fc.string(), fc.string({ unit: "grapheme" })).filter((id) => !isValidVoiceId(id));

describe("voice-id routing", () => {
  let server: ScriptedServer;
  let provider: Qwen3TTSProvider;

  before(async () => {
    server = await ScriptedServer.start();
    server.script = (request) => {
      if (request.path === "/health") return HEALTH_OK;
      if (request.path === "/synthesize") return wavAnswer();
      if (request.path === "/synthesize/stream") return ndjsonAnswer(2);
      return { status: 404, body: "{}" };
    };
    provider = new Qwen3TTSProvider({ baseUrl: server.url, maxRetries: 0 });
    await provider.initialize();
  });
  after(() => server.close());

  test("qwen3-{timbre} reaches /synthesize with voice = the timbre", async () => {
    await fc.assert(
      fc.asyncProperty(timbre.chain((name) => fc.tuple(fc.constant(name), anyCase(`qwen3-${name}`))), async ([name, voiceId]) => {
        server.reset();
        const result = await provider.synthesize({ text: "Hello.", voiceId, maxNewTokens: 8 });
        assert.equal(server.requests.length, 1);
        const [request] = server.requests;
        assert.equal(request?.method, "POST");
        assert.equal(request?.path, "/synthesize");
        assert.equal(request?.json?.voice, name);
        assert.equal(request?.json?.max_new_tokens, 8);
        assert.equal(result.voiceId, `qwen3-${name}`);
        assert.equal(routeVoice(voiceId).kind, "premium");
      }),
      RUNS,
    );
  });

  test("qwen3-clone-{id} reaches /synthesize with voice = qwen3-clone-{id}", async () => {
    await fc.assert(
      fc.asyncProperty(libraryId.chain((id) => fc.tuple(fc.constant(id), anyCase("qwen3-clone-"))), async ([id, prefix]) => {
        server.reset();
        const result = await provider.synthesize({ text: "Hello.", voiceId: prefix + id });
        assert.equal(server.requests.length, 1);
        assert.equal(server.requests[0]?.path, "/synthesize");
        assert.equal(server.requests[0]?.json?.voice, `qwen3-clone-${id.toLowerCase()}`);
        assert.equal(result.voiceId, `qwen3-clone-${id.toLowerCase()}`);
        assert.equal(routeVoice(prefix + id).kind, "clone");
      }),
      RUNS,
    );
  });

  test("streams route the same way, to /synthesize/stream", async () => {
    const voiceIds = fc.oneof(
      timbre.map((name) => ({ voiceId: `qwen3-${name}`, voice: name })),
      libraryId.map((id) => ({ voiceId: `qwen3-clone-${id}`, voice: `qwen3-clone-${id.toLowerCase()}` })),
    );
    await fc.assert(
      fc.asyncProperty(voiceIds, async ({ voiceId, voice }) => {
        server.reset();
        const chunks = [];
        for await (const chunk of provider.synthesizeStream({ text: "Hi.", voiceId })) chunks.push(chunk);
        assert.equal(chunks.length, 2);
        assert.equal(server.requests[0]?.path, "/synthesize/stream");
        assert.equal(server.requests[0]?.json?.voice, voice);
      }),
      RUNS,
    );
  });

  test("anything else is rejected before any request, naming the valid patterns", async () => {
    await fc.assert(
      fc.asyncProperty(invalidVoiceId, async (voiceId) => {
        server.reset();
        await assert.rejects(provider.synthesize({ text: "Hello.", voiceId }), (error: unknown) => {
          assert.ok(error instanceof UnknownVoiceError, String(error));
          assert.match(error.message, /qwen3-\{timbre\}/);
          assert.match(error.message, /qwen3-clone-\{16 hex digits\}/);
          assert.match(error.message, /vivian/);
          return true;
        });
        const stream = provider.synthesizeStream({ text: "Hello.", voiceId });
        await assert.rejects(stream.next(), UnknownVoiceError);
        assert.equal(provider.supportsVoice(voiceId), false);
        assert.equal(server.requests.length, 0);
      }),
      RUNS,
    );
    assert.equal(provider.getMetrics().failures, 0, "a rejected id is the caller's mistake, not the gateway's");
  });

  test("a style instruction with a clone is refused before any request", async () => {
    server.reset();
    await assert.rejects(
      provider.synthesize({ text: "Hi.", voiceId: "qwen3-clone-0123456789abcdef", instruct: "whisper" }),
      /instruct/,
    );
    assert.equal(server.requests.length, 0);
  });
});
