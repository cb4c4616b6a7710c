"""Tenancy: who the appliance serves and who may do what.

Owns: ``tenants`` (tenants, shadow mode, API and integration keys), ``access`` (roles, the one
permission table, authenticating a bearer key), ``services`` (monitored services, their URLs,
secrets, contacts and approvers) and ``vault`` (secrets encrypted at rest).
May import: ``store``, ``ledger``, ``net``, ``schema``, ``errors``.
"""
