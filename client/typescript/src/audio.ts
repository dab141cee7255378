/**
 * Audio bytes without dependencies: base64 (Node's Buffer when present, else atob/btoa, so the same code
 * runs in browsers and React Native), 16-bit PCM <-> float samples, and WAV files for reference clips.
 */

/** The gateway's output rate for every voice (the 12 Hz speech tokenizer's decoder). */
export const SAMPLE_RATE = 24_000;
/** Bytes of the WAV header the gateway's streaming encoder sends first (sizes marked "unknown"). */
export const WAV_HEADER_BYTES = 44;

interface BufferLike {
  from(data: Uint8Array | string, encoding?: string): Uint8Array & { toString(encoding: string): string };
}

function nodeBuffer(): BufferLike | undefined {
  return (globalThis as { Buffer?: BufferLike }).Buffer;
}

export function base64ToBytes(text: string): Uint8Array {
  const buffer = nodeBuffer();
  if (buffer) {
    const decoded = buffer.from(text, "base64");
    return new Uint8Array(decoded.buffer, decoded.byteOffset, decoded.byteLength);
  }
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function bytesToBase64(bytes: Uint8Array): string {
  const buffer = nodeBuffer();
  if (buffer) return buffer.from(bytes).toString("base64");
  let binary = "";
  const step = 0x8000; // String.fromCharCode's argument count is limited
  for (let i = 0; i < bytes.length; i += step) {
    binary += String.fromCharCode(...bytes.subarray(i, i + step));
  }
  return btoa(binary);
}

/** Raw 16-bit little-endian PCM as float samples in [-1, 1) (a trailing odd byte is ignored). */
export function pcm16ToFloat32(pcm: Uint8Array): Float32Array {
  const count = pcm.byteLength >> 1;
  const view = new DataView(pcm.buffer, pcm.byteOffset, count * 2);
  const samples = new Float32Array(count);
  for (let i = 0; i < count; i++) samples[i] = view.getInt16(i * 2, true) / 32768;
  return samples;
}

/** Float samples (clipped to [-1, 1]) as raw 16-bit little-endian PCM, rounded like the gateway. */
export function float32ToPcm16(samples: ArrayLike<number>): Uint8Array {
  const bytes = new Uint8Array(samples.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < samples.length; i++) {
    const value = Math.max(-1, Math.min(1, samples[i] ?? 0));
    view.setInt16(i * 2, Math.round(value * 32767), true);
  }
  return bytes;
}

/** A complete mono 16-bit WAV file of `samples` at `sampleRate`. */
export function encodeWav(samples: ArrayLike<number>, sampleRate: number): Uint8Array {
  if (!Number.isInteger(sampleRate) || sampleRate <= 0) {
    throw new RangeError(`sampleRate must be a positive integer, got ${sampleRate}`);
  }
  const pcm = float32ToPcm16(samples);
  const file = new Uint8Array(WAV_HEADER_BYTES + pcm.byteLength);
  const view = new DataView(file.buffer);
  const ascii = (offset: number, text: string): void => {
    for (let i = 0; i < text.length; i++) file[offset + i] = text.charCodeAt(i);
  };
  ascii(0, "RIFF");
  view.setUint32(4, 36 + pcm.byteLength, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  ascii(36, "data");
  view.setUint32(40, pcm.byteLength, true);
  file.set(pcm, WAV_HEADER_BYTES);
  return file;
}

/** `parts` one after another in a new array from `create(total length)`. */
function concat<T extends Uint8Array | Float32Array>(parts: readonly T[], create: (length: number) => T): T {
  const joined = create(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    joined.set(part, offset);
    offset += part.length;
  }
  return joined;
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  return concat(parts, (length) => new Uint8Array(length));
}

export function concatSamples(parts: readonly Float32Array[]): Float32Array {
  return concat(parts, (length) => new Float32Array(length));
}

/**
 * Cuts a raw s16le byte stream into whole samples: network reads may end in the middle of one, whose
 * first byte is kept for the next read.
 */
export class Pcm16Splitter {
  private carry: Uint8Array | null = null;

  push(bytes: Uint8Array): Float32Array {
    const data = this.carry ? concatBytes([this.carry, bytes]) : bytes;
    const whole = data.byteLength & ~1;
    this.carry = whole < data.byteLength ? data.slice(whole) : null;
    return pcm16ToFloat32(data.subarray(0, whole));
  }
}
