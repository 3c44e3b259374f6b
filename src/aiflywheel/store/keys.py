"""API keys: only a SHA-256 of the secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select

from aiflywheel.errors import ConflictError, NotFoundError
from aiflywheel.store.base import StoreBase
from aiflywheel.store.schema import API_KEY_ROLES, ApiKey, utcnow


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class KeysStore(StoreBase):
    def create_api_key(self, role: str, name: str = "") -> tuple[str, ApiKey]:
        """A new key ``fwk_<id>_<secret>`` (returned once, stored only as a hash)."""
        if role not in API_KEY_ROLES:
            raise ConflictError(f"role must be one of {', '.join(API_KEY_ROLES)}, got {role!r}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
        with self.session() as session:
            row = ApiKey(key_id=key_id, secret_hash=hash_secret(secret), role=role, name=name)
            session.add(row)
            session.flush()
            return f"fwk_{key_id}_{secret}", row

    def authenticate(self, token: str) -> ApiKey | None:
        """The live key matching ``token``, or None (unknown, malformed or revoked)."""
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != "fwk" or not key_id or not secret:
            return None
        with self.session() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
        if row is None or row.revoked_at is not None:
            return None
        return row if hmac.compare_digest(row.secret_hash, hash_secret(secret)) else None

    def get_api_key(self, key_id: str) -> ApiKey | None:
        """The key with id ``key_id`` (live or revoked), or None."""
        with self.session() as session:
            return session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))

    def list_api_keys(self) -> list[ApiKey]:
        with self.session() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))

    def revoke_api_key(self, key_id: str) -> ApiKey:
        key_id = key_id.removeprefix("fwk_").split("_")[0]
        with self.session() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
            if row is None:
                raise NotFoundError(f"no API key with id {key_id!r}; see `flywheel keys list`")
            row.revoked_at = row.revoked_at or utcnow()
            return row
