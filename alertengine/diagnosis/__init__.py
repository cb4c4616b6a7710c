"""Diagnosis: the Diagnostic Council explains an incident; it only annotates, policy decides.

Owns: ``council`` (two models with their own lenses, in parallel, bounded in time: consensus,
dissent, split or single model), ``prompt`` (fenced, redacted prompts), ``theory`` (the forced
``triage`` tool and answer validation), ``heuristic`` (the deterministic fallback when the AI is
unavailable) and ``deploys`` (deploy records: the commit context a diagnosis reads).
May import: ``signals``, ``tenancy``, ``store``, ``ledger``, ``net``, ``schema``, ``errors``;
never ``notify``, ``incidents`` or anything above.
"""
