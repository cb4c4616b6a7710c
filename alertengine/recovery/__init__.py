"""Recovery: a human authorizes, the appliance executes the customer's recovery webhook.

Owns: ``approvals`` (single-use signed tokens and their consumption), ``orchestrator`` (asking
approvers, running the authorized recovery webhook with retries) and ``deadletters``.
May import: ``incidents``, ``notify``, ``diagnosis``, ``signals``, ``tenancy``, ``store``,
``ledger``, ``net``, ``schema``, ``errors``; never ``web`` or ``cli``.
"""
