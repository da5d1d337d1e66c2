"""Camera credentials at rest: sealed (Fernet) with a key kept beside the database in
`<data_dir>/camera.secret` (mode 0600, like `stream.secret`), so the database alone does not
give them away. Only the hub unseals them, to talk to the camera; nothing returns them."""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
from cryptography.fernet import Fernet, InvalidToken

from ..security.stream_tokens import load_secret
from .source import Credentials

SECRET_FILE = "camera.secret"


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a camera credential key needs 32 bytes")
        self._fernet = Fernet(base64.urlsafe_b64encode(key[:32]))

    @classmethod
    def load(cls, data_dir: Path) -> Sealer:
        """The data dir's key, created on first use (blocking file I/O: call it off the loop)."""
        return cls(load_secret(data_dir / SECRET_FILE))

    def seal(self, credentials: Credentials) -> str:
        return self._fernet.encrypt(msgspec.json.encode(credentials)).decode()

    def unseal(self, sealed: str) -> Credentials | None:
        """The credentials, or None when they cannot be read (another data dir's key)."""
        try:
            return msgspec.json.decode(self._fernet.decrypt(sealed.encode()), type=Credentials)
        except (InvalidToken, msgspec.DecodeError, msgspec.ValidationError):
            return None
