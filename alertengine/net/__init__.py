"""Outbound network: the URL policy every outbound address must pass, and signed webhooks.

Owns: ``urlpolicy`` (which addresses a tenant's URLs may reach) and ``webhooks`` (signing,
verifying and delivering HMAC-signed webhook calls with retries).
May import: ``alertengine.errors`` only. Everything that talks to the outside world sits above it.
"""
