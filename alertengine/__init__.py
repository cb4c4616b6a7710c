"""AlertEngine: an on-prem incident command appliance with a signed, verifiable ledger."""

__version__ = "0.1.0"
