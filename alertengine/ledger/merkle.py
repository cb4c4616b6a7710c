"""RFC 9162 inclusion and consistency proofs over a ledger's leaf hashes."""

from __future__ import annotations

import hashlib
from typing import Sequence

from .verifier import merkle_root


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """All levels of the tree over ``leaves`` (bottom-up, odd nodes carried up), for fast proofs.

    A node at level ``l``, index ``i`` is the Merkle Tree Hash of leaves
    ``[i * 2**l, min((i + 1) * 2**l, size))``.
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.size = len(leaves)
        self.levels: list[list[bytes]] = [list(leaves)]
        sha = hashlib.sha256
        level = self.levels[0]
        while len(level) > 1:
            nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            self.levels.append(nxt)
            level = nxt

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        return self._mth(0, size) if size else merkle_root([])

    def _mth(self, lo: int, hi: int) -> bytes:
        """Merkle Tree Hash of leaves [lo, hi): a stored node when the range is one, else recursion."""
        n = hi - lo
        level = (n - 1).bit_length()  # smallest l with 2**l >= n
        if lo % (1 << level) == 0 and (n == 1 << level or hi == self.size):
            return self.levels[level][lo >> level]
        if n == 1:
            return self.levels[0][lo]
        k = _split(n)
        return hashlib.sha256(b"\x01" + self._mth(lo, lo + k) + self._mth(lo + k, hi)).digest()

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"no inclusion proof for index {index} in a tree of size {size}")
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._mth(lo, lo + k))
                lo = lo + k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self.size if new_size is None else new_size
        if not 0 < old_size <= new_size <= self.size:
            raise ValueError(f"no consistency proof from {old_size} to {new_size}")
        path: list[bytes] = []
        lo, hi, m, whole = 0, new_size, old_size, True
        while True:
            n = hi - lo
            if m == n:
                if not whole:
                    path.append(self._mth(lo, hi))
                break
            k = _split(n)
            if m <= k:
                path.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._mth(lo, lo + k))
                lo, m, whole = lo + k, m - k, False
        path.reverse()
        return path
