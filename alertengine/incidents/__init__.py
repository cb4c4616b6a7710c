"""Incidents: policy decides, and the state machine is the only place incident state changes.

Owns: ``policy`` (policy as code, versions, evaluation), ``engine`` (the transition table and
``apply_transition``), ``detection`` (signals judged by policy become incidents), ``timers``
(stored deadlines), ``dryrun`` (a candidate policy against recorded signals) and ``replay``
(incident state rebuilt from the ledger alone).
May import: ``diagnosis``, ``notify``, ``signals``, ``tenancy``, ``store``, ``ledger``, ``net``,
``schema``, ``errors``; never ``recovery``, ``web`` or ``cli``.
"""
