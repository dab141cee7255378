/**
 * A real HTTP server on a free loopback port that answers what a test scripts (the TypeScript twin of
 * tests/client/servers.py): the client under test talks real HTTP to it, and every request it received
 * is recorded.
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json: Record<string, unknown> | null;
}

export interface ScriptedAnswer {
  status: number;
  headers?: Record<string, string>;
  /** The body, or pieces written one by one (flushed separately) for streams. */
  body?: string | Uint8Array | Array<string | Uint8Array>;
  /** Wait this long before answering (timeouts, aborts). */
  delayMs?: number;
  /** Pause between body pieces. */
  pieceDelayMs?: number;
  /** Drop the connection instead of answering. */
  destroy?: boolean;
  /** Drop the connection after the body's pieces instead of ending the body (a body cut short). */
  dropAfterBody?: boolean;
}

export type Script = (request: RecordedRequest) => ScriptedAnswer;

export class ScriptedServer {
  readonly requests: RecordedRequest[] = [];
  script: Script = () => ({ status: 404, body: '{"error": {"status": 404, "message": "not scripted"}}' });
  private readonly sockets = new Set<import("node:net").Socket>();

  private constructor(private readonly server: Server) {
    server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
  }

  static async start(): Promise<ScriptedServer> {
    let scripted: ScriptedServer | null = null;
    const server = createServer((req, res) => void scripted?.handle(req, res));
    scripted = new ScriptedServer(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return scripted;
  }

  get url(): string {
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  /** Answer every request with `answers` in turn (the last one repeats). */
  answerInTurn(...answers: ScriptedAnswer[]): void {
    let index = 0;
    this.script = () => answers[Math.min(index++, answers.length - 1)] ?? { status: 500 };
  }

  reset(): void {
    this.requests.length = 0;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parts: Buffer[] = [];
    for await (const part of req) parts.push(part as Buffer);
    const body = Buffer.concat(parts).toString("utf8");
    let json: Record<string, unknown> | null = null;
    try {
      json = body ? (JSON.parse(body) as Record<string, unknown>) : null;
    } catch {
      json = null;
    }
    const recorded: RecordedRequest = { method: req.method ?? "", path: req.url ?? "", headers: req.headers, body, json };
    this.requests.push(recorded);
    const answer = this.script(recorded);
    if (answer.delayMs) await sleep(answer.delayMs);
    if (answer.destroy) {
      req.socket.destroy();
      return;
    }
    if (res.destroyed) return;
    res.writeHead(answer.status, { "content-type": "application/json", ...answer.headers });
    const pieces = Array.isArray(answer.body) ? answer.body : answer.body === undefined ? [] : [answer.body];
    for (const piece of pieces) {
      if (res.destroyed) return;
      res.write(piece);
      if (answer.pieceDelayMs) await sleep(answer.pieceDelayMs);
    }
    if (answer.dropAfterBody) req.socket.destroy();
    else res.end();
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The gateway's error body. */
export function errorBody(status: number, message: string, type = "invalid_request_error", param: string | null = null): string {
  return JSON.stringify({ error: { status, type, message, param } });
}

export const HEALTH_OK: ScriptedAnswer = { status: 200, body: '{"status": "ok"}' };

/** A whole-file answer as the gateway sends it. */
export function wavAnswer(bytes = new Uint8Array([82, 73, 70, 70])): ScriptedAnswer {
  return {
    status: 200,
    headers: { "content-type": "audio/wav", "x-sample-rate": "24000", "x-audio-duration": "0.500", "x-finish-reason": "stop" },
    body: bytes,
  };
}

/** An NDJSON stream answer of `chunks` chunks of two samples each. */
export function ndjsonAnswer(chunks = 2, finishReason = "stop"): ScriptedAnswer {
  const lines: string[] = [];
  for (let i = 0; i < chunks; i++) {
    const last = i === chunks - 1;
    lines.push(
      JSON.stringify({
        type: "chunk",
        sequence: i,
        audio: Buffer.from([0, 64, 0, 192]).toString("base64"),
        sample_rate: 24000,
        is_last: last,
        finish_reason: last ? finishReason : "",
      }) + "\n",
    );
  }
  lines.push(JSON.stringify({ type: "done", finish_reason: finishReason, sample_rate: 24000, duration: chunks * 2 / 24000, chunks }) + "\n");
  return { status: 200, headers: { "content-type": "application/x-ndjson", "x-sample-rate": "24000" }, body: lines };
}
