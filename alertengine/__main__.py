"""``python -m alertengine`` and the PyInstaller entry point."""

import multiprocessing

from .cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    main()
