"""Console sign-in: signed session cookies, CSRF tokens, roles.

A person signs in with an API key (admin, reviewer or viewer); the console then keeps a
session cookie (HttpOnly, SameSite=Strict, signed with HMAC-SHA256) naming the key, its
role and an expiry, and checks on every request that the key is still live with that
role (so a revoked key signs its sessions out). Every form carries a CSRF token derived
from the session id (or, before sign-in, from an anonymous cookie); a POST without the
right token is refused with 403. The signing secret is ``FLYWHEEL_CONSOLE_SECRET`` or,
when unset, a random one generated once and kept in ``$FLYWHEEL_HOME/console-secret``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from aiflywheel.errors import SettingsError

SESSION_COOKIE = "flywheel_console"
ANON_COOKIE = "flywheel_console_anon"
LANG_COOKIE = "flywheel_console_lang"
SESSION_SECONDS = 12 * 3600
CONSOLE_ROLES = ("admin", "reviewer", "viewer")
# What each permission needs: reading every page but Keys, reviewing feedback, deciding.
PERMISSIONS = {
    "view": ("admin", "reviewer", "viewer"),
    "review": ("admin", "reviewer"),
    "admin": ("admin",),
}


def console_secret(home: Path) -> bytes:
    """The signing secret: ``FLYWHEEL_CONSOLE_SECRET``, else one kept under ``home``."""
    given = os.environ.get("FLYWHEEL_CONSOLE_SECRET", "")
    if given:
        if len(given) < 16:
            raise SettingsError(
                f"FLYWHEEL_CONSOLE_SECRET must be at least 16 characters, got {len(given)}"
            )
        return given.encode("utf-8")
    path = home / "console-secret"
    if path.is_file():
        stored = path.read_text(encoding="utf-8").strip()
        if len(stored) >= 32:
            return stored.encode("utf-8")
    home.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_urlsafe(48)
    # Created exclusively (0600), so two processes starting at once agree on one secret.
    tmp = path.with_name(f".console-secret.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(fresh + "\n")
    try:
        os.link(tmp, path)  # fails if another process wrote it first
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ConsoleUser:
    """Who is signed in: the key's id, name and role, and the session's id."""

    key_id: str
    name: str
    role: str
    sid: str

    @property
    def actor(self) -> str:
        """How audit events and reviews name this person."""
        return (self.name or f"key {self.key_id}")[:100]

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


class Signer:
    """Signs and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, purpose: str, data: str) -> str:
        digest = hmac.new(self._secret, f"{purpose}:{data}".encode(), hashlib.sha256)
        return _b64(digest.digest())

    def session_cookie(self, key_id: str, name: str, role: str, *, now: float | None = None) -> str:
        body = {
            "sid": secrets.token_urlsafe(16),
            "kid": key_id,
            "name": name,
            "role": role,
            "exp": int((now or time.time()) + SESSION_SECONDS),
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._mac('session', payload)}"

    def read_session(self, cookie: str | None, *, now: float | None = None) -> dict | None:
        """The session's fields, or None when absent, forged, malformed or expired."""
        if not cookie or "." not in cookie:
            return None
        payload, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(body, dict) or int(body.get("exp", 0)) < (now or time.time()):
            return None
        return body

    def csrf_token(self, sid: str) -> str:
        return self._mac("csrf", sid)

    def check_csrf(self, sid: str | None, token: str | None) -> bool:
        if not sid or not token:
            return False
        return hmac.compare_digest(token, self.csrf_token(sid))
