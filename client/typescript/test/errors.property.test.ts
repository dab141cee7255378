/**
 * Error propagation, as properties: random error responses of a real HTTP server (status, message, type,
 * param, Retry-After) become the typed error of their status, carrying the status, the server's message
 * and the request's context — from the client, through the provider, and in-band in a stream. Only
 * 408/429/5xx are retried.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import fc from "fast-check";

import {
  APIStatusError,
  AuthenticationError,
  BadGatewayError,
  BadRequestError,
  GatewayTimeoutError,
  InternalServerError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  Qwen3TTSClient,
  Qwen3TTSError,
  Qwen3TTSProvider,
  RateLimitError,
  RequestTimeoutError,
  RetryPolicy,
  ServiceUnavailableError,
  UnprocessableEntityError,
  UnsupportedMediaTypeError,
  errorClassForStatus,
  isRetryableStatus,
} from "../src/index.js";
import { HEALTH_OK, ScriptedServer, ndjsonAnswer } from "./scripted-server.js";

const RUNS = { numRuns: 150 };

/** The expected class per status, written out from the issue and the Python client's table. */
const EXPECTED: Record<number, new (...args: never[]) => Qwen3TTSError> = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  408: RequestTimeoutError,
  413: PayloadTooLargeError,
  415: UnsupportedMediaTypeError,
  422: UnprocessableEntityError,
  429: RateLimitError,
  500: InternalServerError,
  502: BadGatewayError,
  503: ServiceUnavailableError,
  504: GatewayTimeoutError,
};

function expectedClass(status: number): new (...args: never[]) => Qwen3TTSError {
  return EXPECTED[status] ?? (status >= 500 ? InternalServerError : APIStatusError);
}

/** Statuses fetch handles itself, which the gateway never sends: the Fetch standard turns 407 into a network
 * error, and Node's fetch resends a 421 (Misdirected Request) on a new connection. */
const FETCH_HANDLED = new Set([407, 421]);
const status = fc
  .oneof(fc.constantFrom(...Object.keys(EXPECTED).map(Number), 502), fc.integer({ min: 400, max: 599 }))
  .filter((code) => !FETCH_HANDLED.has(code));
const message = fc.string({ minLength: 1, maxLength: 60 }).filter((text) => text.trim() === text && text.length > 0);
const errorType = fc.constantFrom("invalid_request_error", "not_found_error", "server_overloaded", "timeout", "server_error");
const param = fc.option(fc.constantFrom("speaker", "voice", "text", "ref_audio"), { nil: null });
const retryAfter = fc.option(fc.integer({ min: 0, max: 30 }), { nil: null });

describe("error propagation", () => {
  let server: ScriptedServer;

  before(async () => {
    server = await ScriptedServer.start();
  });
  after(() => server.close());

  test("an error response becomes the typed error of its status, with message and request context", async () => {
    const maxRetries = 2;
    // Retry-After is honoured but capped at 0 ms here so the property runs fast; retry.test.ts times it.
    const client = new Qwen3TTSClient({
      baseUrl: server.url,
      apiKey: null,
      retryPolicy: new RetryPolicy({ maxRetries, backoffBaseMs: 0, maxRetryAfterMs: 0 }),
    });
    await fc.assert(
      fc.asyncProperty(status, message, errorType, param, retryAfter, async (code, text, type, name, wait) => {
        server.reset();
        const headers: Record<string, string> = wait === null ? {} : { "retry-after": String(wait) };
        server.script = () => ({ status: code, headers, body: JSON.stringify({ error: { status: code, type, message: text, param: name } }) });
        await assert.rejects(client.speak("Hello.", { voice: "vivian" }), (error: unknown) => {
          assert.ok(error instanceof expectedClass(code), `${code} gave ${String(error)}`);
          assert.ok(error instanceof Qwen3TTSError && error instanceof APIStatusError);
          assert.equal(error.status, code);
          assert.equal(error.message, text);
          assert.equal(error.type, type);
          assert.equal(error.param, name);
          assert.equal(error.retryAfter, wait);
          assert.deepEqual(
            { ...error.request, attempt: undefined },
            { operation: "speak", method: "POST", url: `${server.url}/synthesize`, attempt: undefined },
          );
          assert.equal(error.request?.attempt, isRetryableStatus(code) ? maxRetries : 0);
          return true;
        });
        assert.equal(server.requests.length, isRetryableStatus(code) ? maxRetries + 1 : 1, `requests for ${code}`);
      }),
      RUNS,
    );
  });

  test("each status the gateway answers is its own class (exactly), with its message; retried only if 408/429/5xx", async () => {
    const client = new Qwen3TTSClient({ baseUrl: server.url, retryPolicy: new RetryPolicy({ maxRetries: 2, backoffBaseMs: 0, maxRetryAfterMs: 0 }) });
    for (const [code, ErrorClass] of Object.entries(EXPECTED).map(([key, cls]) => [Number(key), cls] as const)) {
      server.reset();
      server.script = () => ({ status: code, headers: { "retry-after": "0" }, body: JSON.stringify({ error: { status: code, message: `refused with ${code}` } }) });
      await assert.rejects(client.speakers(), (error: unknown) => {
        assert.equal((error as object).constructor, ErrorClass, `${code} gave ${String(error)}`);
        assert.ok(error instanceof Qwen3TTSError);
        assert.deepEqual([error.status, error.message, error.retryAfter], [code, `refused with ${code}`, 0]);
        return true;
      });
      assert.equal(server.requests.length, [408, 429, 500, 502, 503, 504].includes(code) ? 3 : 1, `requests for ${code}`);
    }
  });

  test("every status 400-599 is retried exactly when it is 408, 429 or 5xx", async () => {
    const client = new Qwen3TTSClient({ baseUrl: server.url, retryPolicy: new RetryPolicy({ maxRetries: 1, backoffBaseMs: 0 }) });
    for (let code = 400; code <= 599; code++) {
      if (FETCH_HANDLED.has(code)) continue;
      server.reset();
      server.script = () => ({ status: code, body: JSON.stringify({ error: { status: code, message: "no" } }) });
      await assert.rejects(client.languages(), (error: unknown) => error instanceof Qwen3TTSError && error.status === code);
      const retried = code === 408 || code === 429 || code >= 500;
      assert.equal(server.requests.length, retried ? 2 : 1, `requests for ${code}`);
    }
  });

  test("the provider passes the typed error through unchanged", async () => {
    await fc.assert(
      fc.asyncProperty(status, message, async (code, text) => {
        server.script = (request) =>
          request.path === "/health" ? HEALTH_OK : { status: code, body: JSON.stringify({ error: { status: code, message: text } }) };
        const provider = new Qwen3TTSProvider({ baseUrl: server.url, maxRetries: 0 });
        await assert.rejects(provider.synthesize({ text: "Hi.", voiceId: "qwen3-sohee" }), (error: unknown) => {
          assert.ok(error instanceof errorClassForStatus(code));
          assert.ok(error instanceof Qwen3TTSError);
          assert.equal(error.status, code);
          assert.equal(error.message, text);
          assert.equal(error.request?.operation, "speak");
          return true;
        });
        const metrics = provider.getMetrics();
        assert.equal(metrics.failures, 1);
        assert.equal(metrics.lastError?.status, code);
      }),
      RUNS,
    );
  });

  test("an error line inside an NDJSON stream becomes the same typed error", async () => {
    const client = new Qwen3TTSClient({ baseUrl: server.url, maxRetries: 0 });
    await fc.assert(
      fc.asyncProperty(status, message, fc.integer({ min: 0, max: 3 }), async (code, text, before) => {
        const lines = (ndjsonAnswer(4).body as string[]).slice(0, before);
        lines.push(JSON.stringify({ error: { status: code, type: "server_error", message: text, param: null } }) + "\n");
        server.script = () => ({ status: 200, headers: { "content-type": "application/x-ndjson" }, body: lines });
        const received: number[] = [];
        await assert.rejects(
          (async () => {
            for await (const chunk of client.stream("Hi.", { voice: "ryan" })) received.push(chunk.sequence);
          })(),
          (error: unknown) => {
            assert.ok(error instanceof expectedClass(code));
            assert.ok(error instanceof Qwen3TTSError);
            assert.equal(error.status, code);
            assert.equal(error.message, text);
            assert.equal(error.request?.operation, "stream");
            assert.equal(error.request?.url, `${server.url}/synthesize/stream`);
            return true;
          },
        );
        assert.deepEqual(received, [...Array(before).keys()]);
      }),
      RUNS,
    );
  });

  test("bodies that are not the gateway's shape still give a readable message", async () => {
    const client = new Qwen3TTSClient({ baseUrl: server.url, maxRetries: 0 });
    const cases: Array<[string, string]> = [
      ['{"detail": "plain detail"}', "plain detail"],
      ['{"detail": [{"loc": ["body", "speaker"], "msg": "field required"}]}', "speaker: field required"],
      ["<html>bad gateway</html>", "<html>bad gateway</html>"],
      ["", "Bad Gateway"],
    ];
    for (const [bodyText, expected] of cases) {
      server.script = () => ({ status: 502, headers: { "content-type": "text/html" }, body: bodyText });
      await assert.rejects(client.speakers(), (error: unknown) => {
        assert.ok(error instanceof InternalServerError);
        assert.equal(error.message, expected);
        return true;
      });
    }
  });
});
