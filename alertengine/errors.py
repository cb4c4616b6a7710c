"""AlertEngine's exceptions.

    AlertEngineError
    ├── ConfigError              a setting or config file is invalid (names the key)
    ├── LedgerInputError         an event the ledger refuses (names the field); nothing is appended
    ├── StoreError               the database could not do what was asked
    │   └── RollbackDetectedError  the database holds fewer entries than a signed checkpoint
    └── ExportError              an export that cannot be produced (unknown tenant, empty range)
"""

from __future__ import annotations


class AlertEngineError(Exception):
    """Base class of every error AlertEngine raises on purpose."""


class ConfigError(AlertEngineError):
    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class LedgerInputError(AlertEngineError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class StoreError(AlertEngineError):
    pass


class RollbackDetectedError(StoreError):
    pass


class ExportError(AlertEngineError):
    pass
