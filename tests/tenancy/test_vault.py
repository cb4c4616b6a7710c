"""Secrets at rest: round trips, fresh nonces, and refusal of tampered, moved or foreign blobs."""

from __future__ import annotations

from typing import Callable

import pytest

from alertengine.errors import AlertEngineError
from alertengine.ledger import entry
from alertengine.tenancy.vault import SecretVault, VaultError, fingerprint

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
CONTEXT = "tenant:acme/channel:telegram/bot_token"
SECRET = "123456789:AAH-very-secret-bot-token-value_xyz"
NONCE, TAG = 12, 16


@pytest.fixture
def vault() -> SecretVault:
    return SecretVault(KEY)


def flip(index: int) -> Callable[[bytes], bytes]:
    def tamper(blob: bytes) -> bytes:
        changed = bytearray(blob)
        changed[index] ^= 0x01
        return bytes(changed)
    return tamper


@pytest.mark.parametrize("plaintext", [SECRET, "", "päss wörd ✓", "x" * 10_000])
def test_a_secret_round_trips(vault: SecretVault, plaintext: str) -> None:
    blob = vault.encrypt(plaintext, context=CONTEXT)
    assert blob[0] == 0x01
    assert len(blob) == 1 + NONCE + len(plaintext.encode()) + TAG
    assert vault.decrypt(blob, context=CONTEXT) == plaintext
    assert SecretVault(KEY).decrypt(blob, context=CONTEXT) == plaintext


def test_encrypting_the_same_value_twice_gives_different_blobs(vault: SecretVault) -> None:
    first, second = (vault.encrypt(SECRET, context=CONTEXT) for _ in range(2))
    assert first != second
    assert first[1:1 + NONCE] != second[1:1 + NONCE]


def test_the_plaintext_never_appears_in_the_blob(vault: SecretVault) -> None:
    blob = vault.encrypt(SECRET, context=CONTEXT)
    assert SECRET.encode() not in blob
    assert b"very-secret" not in blob
    assert CONTEXT.encode() not in blob


@pytest.mark.parametrize(("tamper", "context"), [
    (lambda blob: blob, "tenant:acme/channel:slack/bot_token"),
    (lambda blob: blob, "tenant:evil/channel:telegram/bot_token"),
    (flip(1), CONTEXT),
    (flip(NONCE), CONTEXT),
    (flip(1 + NONCE), CONTEXT),
    (flip(-TAG - 1), CONTEXT),
    (flip(-TAG), CONTEXT),
    (flip(-1), CONTEXT),
    (lambda blob: blob[:-1], CONTEXT),
    (lambda blob: blob[:1 + NONCE + TAG - 1], CONTEXT),
    (lambda blob: blob[:1], CONTEXT),
    (lambda blob: b"", CONTEXT),
    (lambda blob: blob + b"\x00", CONTEXT),
    (lambda blob: b"\x02" + blob[1:], CONTEXT),
    (lambda blob: b"\x00" + blob[1:], CONTEXT),
    (lambda blob: SecretVault(OTHER_KEY).encrypt(SECRET, context=CONTEXT), CONTEXT),
], ids=["other-channel", "other-tenant", "nonce-first", "nonce-last", "ciphertext", "ciphertext-last",
        "tag-first", "tag-last", "truncated-by-one", "shorter-than-header", "version-only", "empty",
        "extended", "version-2", "version-0", "wrong-key"])
def test_a_blob_that_was_altered_moved_or_foreign_raises_vault_error(
        vault: SecretVault, tamper: Callable[[bytes], bytes], context: str) -> None:
    blob = tamper(vault.encrypt(SECRET, context=CONTEXT))
    with pytest.raises(VaultError) as caught:
        vault.decrypt(blob, context=context)
    assert isinstance(caught.value, AlertEngineError)
    assert SECRET not in str(caught.value)
    assert KEY.hex() not in str(caught.value)


def test_json_mappings_round_trip_and_are_bound_to_their_context(vault: SecretVault) -> None:
    secrets = {"bot_token": SECRET, "chat_id": "-100123"}
    blob = vault.encrypt_json(secrets, context=CONTEXT)
    assert vault.decrypt_json(blob, context=CONTEXT) == secrets
    with pytest.raises(VaultError):
        vault.decrypt_json(blob, context="tenant:acme/channel:telegram/other")


@pytest.mark.parametrize("stored", ['["not", "a", "mapping"]', '{"n": 1}', "not json"])
def test_decrypt_json_refuses_a_blob_that_is_not_a_str_mapping(vault: SecretVault, stored: str) -> None:
    with pytest.raises(VaultError):
        vault.decrypt_json(vault.encrypt(stored, context=CONTEXT), context=CONTEXT)


def test_repr_hides_the_key(vault: SecretVault) -> None:
    text = repr(vault) + str(vault)
    assert KEY.hex() not in text
    assert repr(KEY) not in text
    assert "hidden" in text


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(31), bytes(33), bytes(64), "k" * 32])
def test_a_key_that_is_not_32_bytes_raises_value_error(key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecretVault(key)


def test_an_empty_context_is_refused(vault: SecretVault) -> None:
    with pytest.raises(ValueError, match="context"):
        vault.encrypt(SECRET, context="")


def test_fingerprint_is_the_ledgers_fingerprint() -> None:
    assert fingerprint is entry.fingerprint
    assert fingerprint(SECRET) == entry.fingerprint(SECRET)
