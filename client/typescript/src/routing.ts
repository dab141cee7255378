/**
 * Voice ids as apps see them, and where each one goes (the Python client's `routing.py`):
 *
 * - `qwen3-{timbre}` (`qwen3-vivian`): one of the premium CustomVoice timbres, sent to the gateway as
 *   `voice: "{timbre}"`;
 * - `qwen3-clone-{id}` (`qwen3-clone-0123456789abcdef`): a voice saved in the gateway's voice library,
 *   sent as `voice: "qwen3-clone-{id}"`.
 *
 * Matching is case-insensitive (ids come from config files and UIs) and the gateway's names are lower
 * case. A timbre is a name of letters, digits and underscores (the gateway's `/speakers` decides which
 * exist); a library id is 16 hex digits, as the gateway issues them.
 */

export const VOICE_PREFIX = "qwen3-";
export const CLONE_PREFIX = "qwen3-clone-";

/** The nine CustomVoice timbres (the gateway's `GET /speakers` is authoritative; this is for offline use). */
export const TIMBRES = [
  "vivian",
  "serena",
  "uncle_fu",
  "dylan",
  "eric",
  "ryan",
  "aiden",
  "ono_anna",
  "sohee",
] as const;

/** The gateway's languages (`GET /languages` is authoritative; this is the fallback while it is down). */
export const LANGUAGES = [
  "auto",
  "chinese",
  "english",
  "german",
  "italian",
  "portuguese",
  "spanish",
  "japanese",
  "korean",
  "french",
  "russian",
] as const;

// ASCII only and case-insensitive: lower-casing first would let e.g. the Kelvin sign pass for "k".
const PREMIUM_PATTERN = /^qwen3-([a-z][a-z0-9_]*)$/i;
const CLONE_PATTERN = /^qwen3-clone-([0-9a-f]{16})$/i;
export const VALID_VOICE_PATTERNS = `${VOICE_PREFIX}{timbre} (${TIMBRES.join(", ")}) or ${CLONE_PREFIX}{16 hex digits} from the voice library`;

export type VoiceKind = "premium" | "clone";

export interface VoiceRoute {
  kind: VoiceKind;
  /** The timbre (`premium`) or the voice-library id (`clone`), lower case. */
  target: string;
  /** What the gateway's `voice` field gets: the timbre, or `qwen3-clone-{id}`. */
  gatewayVoice: string;
  /** The normalised voice id (`qwen3-{timbre}` / `qwen3-clone-{id}`). */
  voiceId: string;
}

/** The voice id is not one this provider serves; the message names the valid patterns. */
export class UnknownVoiceError extends Error {
  readonly voiceId: string;

  constructor(voiceId: string) {
    super(`unknown voice id ${JSON.stringify(voiceId.slice(0, 80))}; expected ${VALID_VOICE_PATTERNS}`);
    this.name = "UnknownVoiceError";
    this.voiceId = voiceId;
  }
}

/** Where `voiceId` goes; throws `UnknownVoiceError` for anything but the two patterns. */
export function routeVoice(voiceId: string): VoiceRoute {
  const id = typeof voiceId === "string" ? voiceId : "";
  const clone = CLONE_PATTERN.exec(id)?.[1]?.toLowerCase();
  if (clone !== undefined) {
    return { kind: "clone", target: clone, gatewayVoice: CLONE_PREFIX + clone, voiceId: CLONE_PREFIX + clone };
  }
  const timbre = PREMIUM_PATTERN.exec(id)?.[1]?.toLowerCase();
  // "qwen3-clone" (and "qwen3-clone-<not an id>") belong to the library's namespace, never to a timbre.
  if (timbre !== undefined && timbre !== "clone") {
    return { kind: "premium", target: timbre, gatewayVoice: timbre, voiceId: VOICE_PREFIX + timbre };
  }
  throw new UnknownVoiceError(String(voiceId));
}

export function isSupportedVoice(voiceId: string): boolean {
  try {
    routeVoice(voiceId);
    return true;
  } catch {
    return false;
  }
}

export function premiumVoiceId(timbre: string): string {
  return routeVoice(VOICE_PREFIX + timbre).voiceId;
}

export function cloneVoiceId(libraryId: string): string {
  return routeVoice(CLONE_PREFIX + libraryId).voiceId;
}
