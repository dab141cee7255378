/**
 * Sessions against the real gateway app under uvicorn, its fake engine standing in for Triton (the client's
 * own logic against the gateway's real protocol, fast). tests/agents/test_typescript_sessions.py starts the
 * gateway and runs this file with:
 *
 *   QWEN3_TTS_GATEWAY_URL       the gateway's URL
 *   QWEN3_TTS_GATEWAY_API_KEY   the key it requires
 *
 * Without QWEN3_TTS_GATEWAY_URL every test is skipped. The same client against the real models is in
 * test/e2e.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Qwen3TTSClient, type SessionEvent } from "../../src/index.js";

const BASE_URL = process.env.QWEN3_TTS_GATEWAY_URL ?? "";
const API_KEY = process.env.QWEN3_TTS_GATEWAY_API_KEY || null;
const SKIP = BASE_URL ? false : "QWEN3_TTS_GATEWAY_URL is not set (run tests/agents/test_typescript_sessions.py)";

const client = new Qwen3TTSClient({ baseUrl: BASE_URL || "http://127.0.0.1:9", apiKey: API_KEY, timeoutMs: 10_000 });

describe("sessions against the gateway (fake engine)", { skip: SKIP }, () => {
  test("a cancel once the session is over (done read, or closed) sends nothing and never throws", async () => {
    const session = await client.session({ voice: "ryan", language: "english" });
    session.end("Hi.");
    assert.equal((await session.collect()).finishReason, "stop");
    session.cancel(); // a barge-in that raced the end of the speech
    session.close();
    session.cancel();
    assert.deepEqual(session.refused, []);
  });

  test("a second cancel crosses the first one's done: the session ends cancelled, nothing is refused", async () => {
    const session = await client.session({ voice: "ryan" });
    session.sendText("Hello");
    const events = session.events();
    assert.equal((await events.next()).value?.type, "audio");
    session.cancel();
    session.cancel(); // pressed twice: the gateway ignores the one that finds the session over
    const rest: SessionEvent[] = [];
    for await (const event of events) rest.push(event);
    session.close();
    assert.deepEqual(rest.map((event) => event.type), ["done"]);
    assert.equal(session.finishReason, "cancelled");
    assert.deepEqual(session.refused, []);
  });
});
