/**
 * The provider's circuit breaker, as a property over random sequences of gateway answers (real HTTP to a
 * scripted server, a fake clock for the cooldown): the provider is unavailable exactly after
 * `maxConsecutiveFailures` failures in a row, fails fast without a request while it is, is available
 * again once `cooldownPeriodMs` has passed, and then re-initialises (GET /health) before the next call;
 * a failed re-initialisation makes it unavailable for another full cooldown.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import fc from "fast-check";

import { CircuitBreaker, CircuitOpenError, Qwen3TTSError, Qwen3TTSProvider, isRetryableError } from "../src/index.js";
import { HEALTH_OK, type ScriptedAnswer, ScriptedServer, errorBody, wavAnswer } from "./scripted-server.js";

type Outcome = { kind: "ok" } | { kind: "failure"; status: number | "drop" } | { kind: "caller"; status: number };

const outcome: fc.Arbitrary<Outcome> = fc.oneof(
  fc.constant<Outcome>({ kind: "ok" }),
  fc.constantFrom<number | "drop">(408, 429, 500, 502, 503, 504, "drop").map((status): Outcome => ({ kind: "failure", status })),
  fc.constantFrom(400, 404, 413, 422).map((status): Outcome => ({ kind: "caller", status })),
);

function answer(result: Outcome): ScriptedAnswer {
  if (result.kind === "ok") return wavAnswer();
  if (result.status === "drop") return { status: 200, destroy: true };
  return { status: result.status, body: errorBody(result.status, `scripted ${result.status}`) };
}

describe("circuit breaker", () => {
  let server: ScriptedServer;
  let synthesisAnswer: ScriptedAnswer = wavAnswer();
  let healthAnswer: ScriptedAnswer = HEALTH_OK;

  before(async () => {
    server = await ScriptedServer.start();
    server.script = (request) => (request.path === "/health" ? healthAnswer : synthesisAnswer);
  });
  after(() => server.close());

  test("unavailable exactly after N consecutive failures, available again after the cooldown", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 120_000 }),
        fc.array(outcome, { minLength: 1, maxLength: 25 }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 5 }),
        async (maxConsecutiveFailures, cooldownPeriodMs, outcomes, reinitResults) => {
          let now = 1_000_000;
          const provider = new Qwen3TTSProvider({
            baseUrl: server.url,
            maxRetries: 0,
            maxConsecutiveFailures,
            cooldownPeriodMs,
            now: () => now,
          });
          healthAnswer = HEALTH_OK;
          await provider.initialize();
          let consecutive = 0;
          let reinits = 0;
          for (const result of outcomes) {
            while (consecutive >= maxConsecutiveFailures) {
              // Open: fail fast, no request, for the whole cooldown.
              assert.equal(provider.isAvailable(), false);
              server.reset();
              await assert.rejects(provider.synthesize({ text: "Hi.", voiceId: "qwen3-ryan" }), (error: unknown) => {
                assert.ok(error instanceof CircuitOpenError);
                assert.equal(error.status, 503);
                assert.ok(error.retryAfter !== null && error.retryAfter > 0 && error.retryAfter <= cooldownPeriodMs / 1000);
                return true;
              });
              assert.equal(server.requests.length, 0);
              now += cooldownPeriodMs - 1;
              assert.equal(provider.isAvailable(), false, "still cooling down 1 ms before the end");
              now += 1;
              assert.equal(provider.isAvailable(), true, "available once the cooldown is over");
              assert.equal(provider.getMetrics().circuit, "half_open");
              // The next call re-initialises first.
              // Each failed re-initialisation in the list is used once; then it succeeds.
              const reinitOk = reinitResults[reinits++] ?? true;
              healthAnswer = reinitOk ? HEALTH_OK : { status: 503, headers: { "retry-after": "2" }, body: errorBody(503, "down", "server_overloaded") };
              if (reinitOk) {
                consecutive = 0;
                break;
              }
              server.reset();
              await assert.rejects(provider.synthesize({ text: "Hi.", voiceId: "qwen3-ryan" }), (error: unknown) => {
                assert.ok(error instanceof Qwen3TTSError && error.status === 503 && error.request?.operation === "health");
                return true;
              });
              assert.deepEqual(server.requests.map((r) => r.path), ["/health"]);
              assert.equal(provider.isAvailable(), false, "a failed re-initialisation opens it for another cooldown");
            }
            assert.equal(provider.isAvailable(), true);
            synthesisAnswer = answer(result);
            server.reset();
            const call = provider.synthesize({ text: "Hi.", voiceId: "qwen3-ryan" });
            if (result.kind === "ok") {
              assert.equal((await call).finishReason, "stop");
              consecutive = 0;
            } else {
              await assert.rejects(call, (error: unknown) => {
                assert.ok(error instanceof Qwen3TTSError);
                assert.equal(isRetryableError(error), result.kind === "failure");
                return true;
              });
              consecutive = result.kind === "failure" ? consecutive + 1 : 0;
            }
            assert.equal(server.requests.at(-1)?.path, "/synthesize");
            assert.equal(provider.isAvailable(), consecutive < maxConsecutiveFailures);
            assert.equal(provider.getMetrics().consecutiveFailures, consecutive);
          }
        },
      ),
      { numRuns: 120 },
    );
  });

  test("the breaker alone: the default is 3 failures and 30 s", () => {
    let now = 0;
    const breaker = new CircuitBreaker({ now: () => now });
    const failure = new Qwen3TTSError("down", { status: 503 });
    breaker.recordFailure(failure);
    breaker.recordFailure(failure);
    assert.equal(breaker.available, true);
    breaker.recordFailure(failure);
    assert.equal(breaker.available, false);
    assert.throws(() => breaker.check(), CircuitOpenError);
    now += 29_999;
    assert.equal(breaker.available, false);
    now += 1;
    assert.equal(breaker.state, "half_open");
    assert.throws(() => new CircuitBreaker({ maxConsecutiveFailures: 0 }), /maxConsecutiveFailures must be an integer >= 1/);
  });
});
