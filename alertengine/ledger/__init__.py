"""The ledger format: entries, chains, the Merkle tree, signed checkpoints and their verification.

Owns: ``entry`` (events and canonical entry bytes), ``chain`` (global and per-tenant chains, the
Merkle frontier), ``merkle`` (inclusion and consistency proofs), ``keys`` (the Ed25519 key and
signed notes), ``verifier`` (the standalone verifier shipped in every bundle as ``verify.py``),
``audit`` (verifying the live database) and ``ledger-format.md`` (the normative document, also
shipped in every bundle).
May import: ``alertengine.errors`` only; ``verifier`` imports nothing of the product at all.
"""
