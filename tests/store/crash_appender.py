"""Child process for the crash-safety test: append through the writer as fast as possible and
record each acknowledged seq (written only after the writer's commit acknowledged it)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from alertengine.appliance import open_data_dir
from alertengine.config import Config
from alertengine.ledger.entry import LedgerEvent


async def main(data_dir: Path, acked_path: Path) -> None:
    data = open_data_dir(data_dir)
    db = data.open_database(Config(data_dir=data_dir, checkpoint_interval=0.1))
    fd = os.open(acked_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(fd, b"ready\n")

    async def worker(w: int) -> None:
        n = 0
        while True:
            (entry,) = await db.append(LedgerEvent(kind="crash.test", tenant=f"t{w % 3}", actor="system",
                                                   reason="crash test", data={"w": w, "n": n}))
            os.write(fd, f"{entry.seq}\n".encode())
            n += 1

    await asyncio.gather(*(worker(w) for w in range(16)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
