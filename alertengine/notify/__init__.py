"""Notify: what leaves the appliance to reach people, and the record of what did not.

Owns: ``gateway`` (the one egress point; shadow mode suppresses and ledgers), ``channels/``
(per-tenant channel settings and one module per channel) and ``shadow_report`` (the governance
report of what would have happened).
May import: ``tenancy``, ``store``, ``ledger``, ``net``, ``schema``, ``errors``; never
``incidents``, ``diagnosis``, ``recovery`` or anything above.
"""
