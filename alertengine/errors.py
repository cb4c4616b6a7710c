"""AlertEngine's exceptions.

    AlertEngineError
    ├── ConfigError              a setting or config file is invalid (names the key)
    ├── FieldError               input refused, naming the field (API: 422, CLI: exit 2)
    │   ├── LedgerInputError     an event the ledger refuses; nothing is appended
    │   ├── SchemaError          a body that breaks its JSON schema (schema.py)
    │   ├── UrlPolicyError       an outbound URL the policy refuses (urlpolicy.py)
    │   └── ConflictError        clashes with an existing resource, e.g. a duplicate name (API: 409)
    ├── NotFoundError            a resource that does not exist or belongs to another tenant (API: 404)
    ├── VaultError               a secret that cannot be decrypted (vault.py)
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


class FieldError(AlertEngineError):
    """Input refused; ``field`` names what was wrong ("" for the whole input)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class LedgerInputError(FieldError):
    pass


class ConflictError(FieldError):
    pass


class NotFoundError(AlertEngineError):
    """A resource that does not exist, or that the caller's tenant does not own (same answer)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class StoreError(AlertEngineError):
    pass


class RollbackDetectedError(StoreError):
    pass


class ExportError(AlertEngineError):
    pass
