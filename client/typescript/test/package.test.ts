/**
 * The built package as an app imports it: by its name, through package.json's `exports`, from dist/ with
 * its declarations (this file is type-checked against dist/index.d.ts, not against src/).
 */

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";

import {
  CircuitOpenError,
  Qwen3TTSClient,
  Qwen3TTSProvider,
  ServiceUnavailableError,
  UnprocessableEntityError,
  routeVoice,
  type AudioChunk,
  type ClientOptions,
  type ProviderOptions,
} from "qwen3-tts-client";

const root = new URL("../../", import.meta.url);

test("package.json points at built files that exist", () => {
  const manifest = JSON.parse(readFileSync(new URL("package.json", root), "utf8")) as {
    type: string;
    exports: { ".": { types: string; import: string } };
    engines: { node: string };
  };
  assert.equal(manifest.type, "module");
  assert.equal(manifest.engines.node, ">=20");
  for (const file of [manifest.exports["."].types, manifest.exports["."].import]) {
    assert.ok(existsSync(new URL(file, root)), `${file} is built`);
  }
});

test("the public API is there, typed", () => {
  const options: ClientOptions = { baseUrl: "http://127.0.0.1:8080", apiKey: null, timeoutMs: 1000 };
  const providerOptions: ProviderOptions = { ...options, maxConsecutiveFailures: 3, cooldownPeriodMs: 30_000 };
  assert.equal(new Qwen3TTSClient(options).baseUrl, "http://127.0.0.1:8080");
  assert.equal(new Qwen3TTSProvider(providerOptions).name, "qwen3");
  assert.ok(new CircuitOpenError("open") instanceof ServiceUnavailableError);
  assert.equal(new UnprocessableEntityError("bad", { status: 422 }).name, "UnprocessableEntityError");
  assert.equal(routeVoice("qwen3-Vivian").gatewayVoice, "vivian");
  const chunk: Pick<AudioChunk, "sequence" | "isLast" | "finishReason"> = { sequence: 0, isLast: true, finishReason: "stop" };
  assert.equal(chunk.isLast, true);
});
