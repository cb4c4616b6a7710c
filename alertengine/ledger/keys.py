"""The appliance's Ed25519 ledger key: creation, the verifier key, and signing C2SP notes."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .verifier import (
    EM_DASH,
    VerifierKey,
    WitnessKey,
    cosigned_message,
    cosigner_key_id,
    key_id,
)


@dataclass(frozen=True)
class LedgerSigner:
    """Signs checkpoints and tenant heads as the log ``alertengine/<install-id>``."""

    name: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, key_id(self.name, self.public_key), self.public_key)

    @property
    def vkey(self) -> str:
        return self.verifier.text()

    def sign_note(self, text: str) -> str:
        if not text.endswith("\n") or "\n\n" in text:
            raise ValueError("note text must end in one newline and hold no empty line")
        sig = self.private_key.sign(text.encode())
        kid = key_id(self.name, self.public_key)
        return f"{text}\n{EM_DASH} {self.name} {base64.b64encode(kid + sig).decode()}\n"

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> "LedgerSigner":
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load_or_create(cls, path: Path, name: str) -> "LedgerSigner":
        """Load the PEM key at ``path``; create it (mode 0600) if absent."""
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an Ed25519 private key")
            return cls(name, key)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_private_file(path, pem)
        return cls(name, key)


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never world-readable, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class WitnessSigner(LedgerSigner):
    """A witness's Ed25519 key: cosigns checkpoints (C2SP tlog-cosignature v1, type 0x04). It shares
    the ledger signer's key handling; its key id and signed message are the cosignature's own."""

    @property
    def key(self) -> WitnessKey:
        return WitnessKey(self.name, cosigner_key_id(self.name, self.public_key), self.public_key)

    @property
    def vkey(self) -> str:
        return self.key.text()

    def cosign(self, text: str, timestamp: int) -> str:
        """The cosignature line (ending in a newline) for a checkpoint's ``text`` at ``timestamp``."""
        signature = self.private_key.sign(cosigned_message(text, timestamp))
        raw = self.key.key_id + timestamp.to_bytes(8, "big") + signature
        return f"{EM_DASH} {self.name} {base64.b64encode(raw).decode()}\n"

