"""``python -m alertengine`` and the PyInstaller entry point."""

import multiprocessing

# absolute: PyInstaller runs this file as a script, where a relative import has no package
from alertengine.cli import main  # noqa: I001

if __name__ == "__main__":
    multiprocessing.freeze_support()
    main()
