"""Optional Bearer API keys (``settings.api_keys``; empty disables auth).

The dependency returns the caller's *owner* id (a hash of the key), which scopes the voice library.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from qwen3_tts_serving.settings import Settings

from .deps import SettingsDep
from .errors import AuthenticationError
from .voices import owner_of

_bearer = HTTPBearer(auto_error=False, description="An API key from QWEN3_TTS_API_KEYS.")


# How to pass a key, named in every refusal.
HTTP_KEY_HINT = "Authorization: Bearer <key>"
WEBSOCKET_KEY_HINT = "Authorization: Bearer <key>, or ?api_key=<key> where headers cannot be set"


def check_key(settings: Settings, token: str | None, how_to_pass: str = HTTP_KEY_HINT) -> str:
    """The owner id of ``token``; raises AuthenticationError when auth is on and the key is missing or
    wrong, with the same message shape either way."""
    if not settings.api_keys:
        return owner_of(None)
    if not token:
        raise AuthenticationError(f"missing API key ({how_to_pass})")
    supplied = token.encode("utf-8")
    if not any(secrets.compare_digest(supplied, key.encode("utf-8")) for key in settings.api_keys):
        raise AuthenticationError(f"invalid API key ({how_to_pass})")
    return owner_of(token)


def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    token = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None
    return check_key(settings, token)


def websocket_owner(websocket: WebSocket, settings: Settings) -> str:
    """WebSockets: ``Authorization: Bearer`` header, or ``?api_key=`` for browsers (no custom headers)."""
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        token = websocket.query_params.get("api_key", "")
    return check_key(settings, token.strip() or None, WEBSOCKET_KEY_HINT)


OwnerDep = Annotated[str, Depends(require_api_key)]
