/**
 * The built package as an app imports it: by its name, through package.json's `exports`, from dist/ with
 * its declarations (this file is type-checked against dist/index.d.ts, not against src/).
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

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

test("CommonJS code can require() it (Node >= 20.19 loads an ES module synchronously)", () => {
  const required = createRequire(import.meta.url)("qwen3-tts-client") as { Qwen3TTSClient: unknown };
  assert.equal(required.Qwen3TTSClient, Qwen3TTSClient);
});

test("npm pack from a fresh checkout (no dist/: it is not in git) builds and ships dist/", () => {
  const source = fileURLToPath(root);
  const checkout = mkdtempSync(join(tmpdir(), "qwen3-tts-client-pack-"));
  try {
    for (const name of ["package.json", "package-lock.json", "README.md", "src", "tsconfig.base.json", "tsconfig.build.json"]) {
      cpSync(join(source, name), join(checkout, name), { recursive: true });
    }
    symlinkSync(join(source, "node_modules"), join(checkout, "node_modules"), "dir");
    const output = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts=false"], { cwd: checkout, encoding: "utf8" });
    const packed = (JSON.parse(output.slice(output.indexOf("["))) as Array<{ files: Array<{ path: string }> }>)[0];
    const files = new Set(packed?.files.map((file) => file.path));
    for (const file of ["dist/index.js", "dist/index.d.ts", "dist/session.js", "package.json"]) {
      assert.ok(files.has(file), `${file} is in the package`);
    }
  } finally {
    rmSync(checkout, { recursive: true, force: true });
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
