/**
 * Sessions against a real local WebSocket server (the `ws` package's) that plays the gateway's side of
 * `/ws/session` as each test scripts it: the start message, auth, audio frames and events, refusals, a
 * connection lost mid-session, aborts and timeouts. The real gateway is in test/e2e.
 */

import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";

import { WebSocketServer, type WebSocket } from "ws";

import {
  APIConnectionError,
  APITimeoutError,
  APIUserAbortError,
  NotFoundError,
  Qwen3TTSClient,
  RateLimitError,
  ServiceUnavailableError,
  UnprocessableEntityError,
  sessionStartMessage,
  websocketUrl,
} from "../src/index.js";
import { ScriptedServer, errorBody, sleep } from "./scripted-server.js";

type Handler = (socket: WebSocket, message: Record<string, unknown>) => void;

describe("sessions", () => {
  let server: WebSocketServer;
  let url: string;
  let handler: Handler = () => undefined;
  const received: Array<Record<string, unknown>> = [];
  const upgrades: IncomingMessage[] = [];

  before(async () => {
    server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise<void>((resolve) => server.once("listening", () => resolve()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    server.on("connection", (socket, request) => {
      upgrades.push(request);
      socket.on("message", (data) => {
        const message = JSON.parse(String(data)) as Record<string, unknown>;
        received.push(message);
        handler(socket, message);
      });
    });
  });
  after(async () => {
    for (const socket of server.clients) socket.terminate();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const started = (socket: WebSocket): void =>
    socket.send(JSON.stringify({ type: "started", session_id: "s1", sample_rate: 24000, format: "pcm", stream_format: "binary", voice: "ryan" }));

  test("start, fragments, audio frames, a refused message, done", async () => {
    received.length = 0;
    upgrades.length = 0;
    handler = (socket, message) => {
      if (message.type === "start") started(socket);
      if (message.type === "text" && String(message.text).length > 10) {
        socket.send(JSON.stringify({ type: "error", status: 422, message: "too long", reason: "text_too_long", fatal: false, error_type: "invalid_request_error", param: "text" }));
      }
      if (message.type === "end") {
        socket.send(Buffer.from([0, 64, 0, 192]));
        socket.send(Buffer.from([0, 32]));
        socket.send(JSON.stringify({ type: "done", session_id: "s1", finish_reason: "stop", duration: 0.000125, chunks: 2, sample_rate: 24000, text_chars: 5 }));
      }
    };
    const client = new Qwen3TTSClient({ baseUrl: url, apiKey: "k" });
    const session = await client.session({ voice: "ryan", language: "english", lookaheadTokens: 3, doSample: false, seed: 4 });
    assert.equal(session.sessionId, "s1");
    session.sendText("Hel");
    session.sendText("lo", { flush: true });
    session.sendText("x".repeat(20));
    session.flush();
    session.end();
    const chunks = [];
    for await (const chunk of session) chunks.push(chunk);
    session.close();
    assert.match(session.startId, /^[0-9a-f]{32}$/);
    assert.deepEqual(received, [
      { type: "start", voice: "ryan", format: "pcm", language: "english", lookahead_tokens: 3, do_sample: false, seed: 4, id: session.startId },
      { type: "text", text: "Hel" },
      { type: "text", text: "lo", flush: true },
      { type: "text", text: "x".repeat(20) },
      { type: "flush" },
      { type: "end" },
    ]);
    assert.equal(upgrades[0]?.headers.authorization, "Bearer k");
    assert.equal(upgrades[0]?.url, "/ws/session"); // on Node the key goes in the header only, not in logged URLs
    assert.deepEqual(chunks.map((c) => [c.sequence, c.isLast, c.finishReason, [...c.samples]]), [
      [0, false, null, [0.5, -0.5]],
      [1, false, null, [0.25]],
      [2, true, "stop", []],
    ]);
    assert.equal(session.refused.length, 1);
    assert.ok(session.refused[0] instanceof UnprocessableEntityError);
    assert.equal(session.refused[0]?.param, "text");
    assert.equal(session.summary?.textChars, 5);
  });

  test("events marked for another start are ignored; unmarked ones and binary frames are the session's", async () => {
    const stale = { type: "error", status: 422, message: "stale", reason: "no_session", fatal: true, error_type: "invalid_request_error", param: null };
    const starts: string[] = [];
    const startOf = new Map<WebSocket, string>();
    handler = (socket, message) => {
      if (message.type === "start") startOf.set(socket, String(message.id));
      const id = startOf.get(socket);
      if (message.type === "start") {
        starts.push(String(id));
        socket.send(JSON.stringify({ ...stale, id: "another-start" })); // a stale answer on a reused socket
        socket.send(JSON.stringify({ type: "started", session_id: "s1", sample_rate: 24000, format: "pcm", stream_format: "binary", voice: "ryan", id }));
      }
      if (message.type === "end") {
        socket.send(JSON.stringify({ type: "chunk", sequence: 9, format: "pcm", audio: "AAAAAA==", id: "another-start" }));
        socket.send(JSON.stringify({ ...stale, reason: "text_too_long", fatal: false, id: "t-1", start_id: "another-start" }));
        socket.send(JSON.stringify({ type: "done", session_id: "x", finish_reason: "cancelled", duration: 0, chunks: 0, sample_rate: 24000, text_chars: 0, id: "another-start" }));
        socket.send(Buffer.from([0, 64, 0, 192])); // binary frames carry no id: this session's
        socket.send(JSON.stringify({ ...stale, reason: "text_too_long", fatal: false, start_id: id })); // refused, ours
        socket.send(JSON.stringify({ ...stale, reason: "protocol", fatal: false })); // unmarked (a gateway without ids): ours
        socket.send(JSON.stringify({ type: "done", session_id: "s1", finish_reason: "stop", duration: 0, chunks: 1, sample_rate: 24000, text_chars: 3, id }));
      }
    };
    const client = new Qwen3TTSClient({ baseUrl: url, timeoutMs: 5000 });
    const session = await client.session({ voice: "ryan" });
    const other = await client.session({ voice: "ryan" });
    other.close();
    assert.deepEqual(starts, [session.startId, other.startId]);
    assert.notEqual(session.startId, other.startId);
    session.end("Hi.");
    const result = await session.collect();
    session.close();
    assert.equal(session.sessionId, "s1");
    assert.equal(result.finishReason, "stop");
    assert.deepEqual([...result.samples], [0.5, -0.5]);
    assert.deepEqual(session.refused.map((error) => error.message), ["stale", "stale"]);
  });

  test("a refused start is its typed error", async () => {
    handler = (socket) => {
      socket.send(JSON.stringify({ type: "error", status: 404, message: "voice 'qwen3-clone-0000000000000000' not found", reason: "not_found_error", fatal: true, error_type: "not_found_error", param: "voice" }));
    };
    const client = new Qwen3TTSClient({ baseUrl: url });
    await assert.rejects(client.session({ voice: "qwen3-clone-0000000000000000" }), (error: unknown) => {
      assert.ok(error instanceof NotFoundError);
      assert.equal(error.status, 404);
      assert.match(error.message, /not found/);
      assert.equal(error.request?.operation, "session");
      return true;
    });
  });

  test("a connection lost before done is an APIConnectionError", async () => {
    handler = (socket, message) => {
      if (message.type === "start") started(socket);
      if (message.type === "end") socket.terminate();
    };
    const session = await new Qwen3TTSClient({ baseUrl: url }).session({ voice: "ryan" });
    session.end("Hi.");
    await assert.rejects(session.collect(), APIConnectionError);
    assert.throws(() => session.sendText("more"), /closed/);
  });

  test("a gateway that closes the session to restart is a ServiceUnavailableError", async () => {
    for (const [code, reason] of [[1012, ""], [1013, "shutting down"]] as const) {
      handler = (socket, message) => {
        if (message.type === "start") started(socket);
        if (message.type === "end") socket.close(code, reason);
      };
      const session = await new Qwen3TTSClient({ baseUrl: url }).session({ voice: "ryan" });
      session.end("Hi.");
      await assert.rejects(session.collect(), (error: unknown) => {
        assert.ok(error instanceof ServiceUnavailableError, String(error));
        assert.equal(error.status, 503);
        assert.match(error.message, new RegExp(`code ${code}: ${reason || "restarting"}\\); retry`));
        return true;
      });
    }
  });

  test("cancel once the session is over sends nothing and never throws", async () => {
    received.length = 0;
    let serverSideClosed: Promise<void> = Promise.resolve();
    handler = (socket, message) => {
      if (message.type === "start") {
        serverSideClosed = new Promise((resolve) => socket.once("close", () => resolve()));
        started(socket);
      }
      if (message.type === "end") {
        socket.send(JSON.stringify({ type: "done", session_id: "s1", finish_reason: "stop", duration: 0, chunks: 0, sample_rate: 24000, text_chars: 3 }));
      }
      if (message.type === "cancel") {
        // What a gateway without idempotent cancel answers to a cancel that crossed the done.
        socket.send(JSON.stringify({ type: "error", status: 422, message: "nothing to cancel: no session is open", reason: "nothing_to_cancel", fatal: false, error_type: "invalid_request_error", param: null }));
      }
    };
    const session = await new Qwen3TTSClient({ baseUrl: url }).session({ voice: "ryan" });
    session.end("Hi.");
    assert.equal((await session.collect()).finishReason, "stop");
    session.cancel(); // the done was read: a barge-in that raced the end
    session.close();
    session.cancel(); // the connection is closed
    await serverSideClosed; // every message the client sent has arrived
    assert.deepEqual(received.map((message) => message.type), ["start", "end"]);
    assert.deepEqual(session.refused, []);
  });

  test("aborting closes the socket and rejects the read", async () => {
    handler = (socket, message) => {
      if (message.type === "start") started(socket);
    };
    const controller = new AbortController();
    const session = await new Qwen3TTSClient({ baseUrl: url }).session({ voice: "ryan", signal: controller.signal });
    setTimeout(() => controller.abort(), 30);
    await assert.rejects(session.collect(), APIUserAbortError);
    await assert.rejects(new Qwen3TTSClient({ baseUrl: url }).session({ voice: "ryan", signal: AbortSignal.abort() }), APIUserAbortError);
  });

  test("aborting while audio is buffered closes the socket at once; the next read is the abort", async () => {
    let socketClosed: Promise<number> = Promise.resolve(0);
    handler = (socket, message) => {
      if (message.type !== "start") return;
      socketClosed = new Promise((resolve) => socket.once("close", () => resolve(Date.now())));
      started(socket);
      for (let i = 0; i < 50; i++) socket.send(Buffer.from([0, 64, 0, 192]));
    };
    const controller = new AbortController();
    const session = await new Qwen3TTSClient({ baseUrl: url, timeoutMs: 5000 }).session({ voice: "ryan", signal: controller.signal });
    let chunks = 0;
    let abortedAt = 0;
    await assert.rejects(
      (async () => {
        for await (const _ of session) {
          chunks += 1;
          if (chunks === 2) {
            controller.abort();
            abortedAt = Date.now();
          }
          await sleep(20); // the chunk plays while the rest is buffered
        }
      })(),
      APIUserAbortError,
    );
    assert.equal(chunks, 2);
    assert.ok((await socketClosed) - abortedAt < 500);
  });

  test("a connection lost while the reader is busy is reported by the next read", async () => {
    handler = (socket, message) => {
      if (message.type === "start") started(socket);
      if (message.type === "end") {
        socket.send(Buffer.from([0, 64]));
        socket.terminate();
      }
    };
    const session = await new Qwen3TTSClient({ baseUrl: url, timeoutMs: 2000 }).session({ voice: "ryan" });
    session.end("Hi.");
    await assert.rejects(
      (async () => {
        for await (const _ of session) await sleep(100);
      })(),
      (error: unknown) => error instanceof APIConnectionError && !(error instanceof APITimeoutError),
    );
  });

  test("a gateway that does not answer start, end or a first fragment times out", async () => {
    handler = (socket, message) => {
      if (message.type === "start") started(socket);
    };
    const client = new Qwen3TTSClient({ baseUrl: url, timeoutMs: 100 });
    const session = await client.session({ voice: "ryan" });
    session.end("Hi.");
    await assert.rejects(session.collect(), APITimeoutError);
    // `started` answers the start, not the fragment in it: its audio is still owed.
    await assert.rejects((await client.session({ voice: "ryan", text: "Hello." })).collect(), APITimeoutError);
    handler = () => undefined;
    await assert.rejects(client.session({ voice: "ryan" }), APITimeoutError);
  });

  test("a gateway that never answers times out although the client keeps sending text", async () => {
    handler = (socket, message) => {
      if (message.type === "start") started(socket);
    };
    const session = await new Qwen3TTSClient({ baseUrl: url, timeoutMs: 200 }).session({ voice: "ryan" });
    const firstSend = Date.now();
    let sends = 0;
    const sender = setInterval(() => {
      try {
        session.sendText("word ");
        if (++sends === 30) clearInterval(sender); // 1.2 s of text: a clock restarted by sends fails, not hangs
      } catch {
        clearInterval(sender); // closed by the timeout
      }
    }, 40);
    session.sendText("Hello ");
    try {
      await assert.rejects(session.collect(), APITimeoutError);
    } finally {
      clearInterval(sender);
    }
    const waited = Date.now() - firstSend;
    assert.ok(waited >= 190 && waited < 1000, `timed out after ${waited} ms: later sends must not restart the clock`);
  });

  test("the client's own quiet time is not gateway silence; a late answer to a late send is on time", async () => {
    handler = (socket, message) => {
      if (message.type === "start") started(socket);
      if (message.type === "text") setTimeout(() => socket.send(Buffer.from([0, 64])), 100);
      if (message.type === "end") {
        socket.send(Buffer.from([0, 32]));
        socket.send(JSON.stringify({ type: "done", session_id: "s1", finish_reason: "stop", duration: 0, chunks: 2, sample_rate: 24000, text_chars: 12 }));
      }
    };
    const session = await new Qwen3TTSClient({ baseUrl: url, timeoutMs: 300 }).session({ voice: "ryan" });
    const collected = session.collect(); // the reader waits all along, as a player would
    await sleep(450); // the LLM thinks: nothing sent, nothing owed
    session.sendText("Hello there.", { flush: true }); // answered 100 ms later: 550 ms after the last message
    await sleep(500); // all spoken; the user talks
    session.end();
    const result = await collected;
    assert.equal(result.finishReason, "stop");
    assert.deepEqual([...result.samples], [0.5, 0.25]);
  });

  test("after end, every silence of the gateway counts until done; steady audio is never cut", async () => {
    const audioThenDone = (socket: WebSocket, gapMs: number, frames: number, done: boolean): void => {
      let sent = 0;
      const timer = setInterval(() => {
        if (sent < frames) {
          socket.send(Buffer.from([0, 64]));
          sent += 1;
          return;
        }
        clearInterval(timer);
        if (done) socket.send(JSON.stringify({ type: "done", session_id: "s1", finish_reason: "stop", duration: 0, chunks: frames, sample_rate: 24000, text_chars: 3 }));
      }, gapMs);
    };
    let done = true;
    handler = (socket, message) => {
      if (message.type === "start") started(socket);
      if (message.type === "end") audioThenDone(socket, 100, 5, done); // 600 ms in all, gaps of 100 ms
    };
    const client = new Qwen3TTSClient({ baseUrl: url, timeoutMs: 250 });
    const steady = await client.session({ voice: "ryan" });
    steady.end("Hi.");
    assert.equal((await steady.collect()).samples.length, 5);
    done = false; // the audio stops and done never comes
    const stalled = await client.session({ voice: "ryan" });
    stalled.end("Hi.");
    await assert.rejects(stalled.collect(), APITimeoutError);
  });

  test("nothing listening is an APIConnectionError", async () => {
    await assert.rejects(new Qwen3TTSClient({ baseUrl: "http://127.0.0.1:9" }).session({ voice: "ryan" }), (error: unknown) =>
      error instanceof APIConnectionError && !(error instanceof APITimeoutError),
    );
  });

  test("an upgrade refused with an HTTP status is that status's typed error, with the message and Retry-After", async () => {
    // The draining gateway answers the handshake 503 + Retry-After; a proxy may answer 429: real HTTP here.
    const http = await ScriptedServer.start();
    try {
      for (const [status, ErrorClass] of [[503, ServiceUnavailableError], [429, RateLimitError]] as const) {
        http.script = () => ({
          status,
          headers: { "retry-after": "7" },
          body: errorBody(status, "the gateway is shutting down; retry", "server_overloaded"),
        });
        await assert.rejects(new Qwen3TTSClient({ baseUrl: http.url, apiKey: "k" }).session({ voice: "ryan" }), (error: unknown) => {
          assert.ok(error instanceof ErrorClass, String(error));
          assert.deepEqual([error.status, error.message, error.type], [status, "the gateway is shutting down; retry", "server_overloaded"]);
          assert.equal(error.retryAfter, 7);
          assert.equal(error.request?.operation, "session");
          return true;
        });
      }
      assert.deepEqual(http.requests.map((request) => request.path), ["/ws/session", "/ws/session"]);
    } finally {
      await http.close();
    }
  });

  test("start messages and URLs", () => {
    assert.deepEqual(sessionStartMessage({ voice: "vivian", format: "mp3", jsonChunks: true, text: "Hi", topP: 0.9 }), {
      type: "start",
      voice: "vivian",
      format: "mp3",
      text: "Hi",
      stream_format: "json",
      top_p: 0.9,
    });
    assert.throws(() => sessionStartMessage({ voice: "ryan", lookaheadTokens: 65 }), /0-64/);
    assert.throws(() => sessionStartMessage({ voice: "ryan", format: "flac" as "pcm" }), /pcm, wav, mp3, opus/);
    assert.equal(websocketUrl("https://tts.example/api/", null), "wss://tts.example/api/ws/session");
    assert.equal(websocketUrl("http://h:1", "a b"), "ws://h:1/ws/session?api_key=a+b");
  });
});
