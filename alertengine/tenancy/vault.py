"""Secrets at rest: AES-256-GCM encryption of channel secrets, bound to the row they belong to."""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import AlertEngineError
from ..ledger.entry import fingerprint

__all__ = ["KEY_BYTES", "SecretVault", "VaultError", "fingerprint"]

KEY_BYTES = 32
VERSION = 0x01
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = bytes([VERSION])


class VaultError(AlertEngineError):
    """A blob that cannot be decrypted: tampered, truncated, another context, another key or an unknown version."""


def _associated_data(context: str) -> bytes:
    if not isinstance(context, str) or not context:
        raise ValueError("a vault context such as 'tenant:acme/channel:telegram/bot_token' is required")
    return _HEADER + context.encode("utf-8")


class SecretVault:
    """Encrypts secrets with one 32-byte key; blobs are ``version (0x01) || nonce (12) || ciphertext+tag``."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise ValueError(f"a vault key must be exactly {KEY_BYTES} bytes")
        self._aead = AESGCM(bytes(key))

    def __repr__(self) -> str:
        return "SecretVault(key=<hidden>)"

    def encrypt(self, plaintext: str, *, context: str) -> bytes:
        """Encrypt ``plaintext`` under a fresh random nonce, bound to ``context``."""
        if not isinstance(plaintext, str):
            raise TypeError("the vault encrypts str values")
        nonce = os.urandom(NONCE_BYTES)
        return _HEADER + nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), _associated_data(context))

    def decrypt(self, blob: bytes, *, context: str) -> str:
        """Decrypt a blob made by :meth:`encrypt` with the same key and context, or raise VaultError."""
        aad = _associated_data(context)
        try:
            data = bytes(blob)
        except TypeError:
            raise VaultError("a vault blob must be bytes") from None
        if len(data) < 1 + NONCE_BYTES + TAG_BYTES:
            raise VaultError("the vault blob is truncated")
        if data[0] != VERSION:
            raise VaultError(f"the vault blob has an unknown version byte 0x{data[0]:02x}")
        nonce, sealed = data[1:1 + NONCE_BYTES], data[1 + NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, sealed, aad).decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise VaultError("the vault blob does not decrypt: it was altered, belongs to another "
                             "context, or was made with another key") from None

    def encrypt_json(self, mapping: dict[str, str], *, context: str) -> bytes:
        """Encrypt a str-to-str mapping (e.g. all of one channel's secrets) as one blob."""
        if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise TypeError("encrypt_json takes a dict of str to str")
        text = json.dumps(mapping, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return self.encrypt(text, context=context)

    def decrypt_json(self, blob: bytes, *, context: str) -> dict[str, str]:
        """Decrypt a blob made by :meth:`encrypt_json`, or raise VaultError."""
        text = self.decrypt(blob, context=context)
        try:
            mapping = json.loads(text)
        except ValueError:
            mapping = None
        if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise VaultError("the vault blob does not hold a mapping of str to str")
        return mapping
