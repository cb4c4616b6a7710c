"""The council: two models with different lenses, in parallel, bounded in time; their answers
validated and combined into consensus, dissent, split or single-model; the heuristic otherwise.

Confidence of a consensus combines the two as independent evidence ("noisy OR"):
``100 - (100 - a) * (100 - b) / 100`` — two models at 70 % agreeing give 91 %. A dissent needs
both theories at or above the policy's ``[diagnosis] dissent_confidence``; below that the more
confident theory leads ("split") and keeps only its own confidence."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..ledger.entry import LedgerEvent, utc_timestamp
from ..net.guard import guarded_client
from ..net.urlpolicy import UrlPolicy
from ..store import Database
from .heuristic import heuristic_theory
from .prompt import LENSES, build_prompt
from .theory import (
    TOOL_NAME,
    TRIAGE_TOOL,
    Diagnosis,
    InvalidAnswerError,
    Theory,
    read_theory,
)

log = logging.getLogger("alertengine.diagnosis")


@dataclass(frozen=True)
class CouncilSettings:
    api_key: str
    base_url: str
    models: tuple[str, str]
    timeout: float = 20.0
    max_retries: int = 2
    max_tokens: int = 1024


@dataclass(frozen=True)
class Answer:
    model: str
    theory: Theory | None
    error: str | None
    input_tokens: int
    output_tokens: int
    latency_ms: float
    prompt: str
    response: str


def combine(a: int, b: int) -> int:
    return round(100 - (100 - a) * (100 - b) / 100)


class Council:
    def __init__(self, db: Database, settings: CouncilSettings | None, concurrency: int = 4,
                 url_policy: UrlPolicy | None = None) -> None:
        self.db = db
        self.url_policy = url_policy
        self.settings = settings if settings and settings.api_key else None
        self._slots = asyncio.Semaphore(concurrency)
        self._client: Any = None

    @property
    def available(self) -> bool:
        return self.settings is not None

    def _anthropic(self) -> Any:
        if self._client is None:
            from anthropic import AsyncAnthropic
            assert self.settings is not None
            http = guarded_client(self.url_policy) if self.url_policy is not None else None
            self._client = AsyncAnthropic(api_key=self.settings.api_key, base_url=self.settings.base_url or None,
                                          max_retries=self.settings.max_retries, timeout=self.settings.timeout,
                                          http_client=http)
        return self._client

    async def _ask(self, model: str, lens: str, context: dict[str, Any], allowed: list[str],
                   secrets: list[str]) -> Answer:
        assert self.settings is not None
        system, user = build_prompt(context, lens, secrets)
        prompt = json.dumps({"model": model, "system": system, "user": user, "tools": [TRIAGE_TOOL]}, sort_keys=True)
        started = time.perf_counter()
        try:
            async with self._slots:
                reply = await self._anthropic().messages.create(
                    model=model, max_tokens=self.settings.max_tokens, system=system,
                    messages=[{"role": "user", "content": user}], tools=[TRIAGE_TOOL],
                    tool_choice={"type": "tool", "name": TOOL_NAME})
        except Exception as exc:  # noqa: BLE001 - any AI failure falls back; it is recorded
            latency = (time.perf_counter() - started) * 1000
            return Answer(model, None, f"{type(exc).__name__}: {str(exc)[:300]}", 0, 0, latency, prompt, "")
        latency = (time.perf_counter() - started) * 1000
        response = reply.model_dump_json() if hasattr(reply, "model_dump_json") else str(reply)
        usage = getattr(reply, "usage", None)
        tokens = (getattr(usage, "input_tokens", 0) or 0, getattr(usage, "output_tokens", 0) or 0)
        if reply.stop_reason == "refusal":
            return Answer(model, None, "the model refused", *tokens, latency, prompt, response)
        blocks = [b for b in reply.content if getattr(b, "type", None) == "tool_use" and b.name == TOOL_NAME]
        if not blocks:
            return Answer(model, None, f"no triage tool call (stop_reason {reply.stop_reason})", *tokens, latency,
                          prompt, response)
        try:
            theory = read_theory(blocks[0].input, allowed, f"ai:{model}")
        except InvalidAnswerError as exc:
            return Answer(model, None, f"invalid triage answer: {exc}", *tokens, latency, prompt, response)
        return Answer(model, theory, None, *tokens, latency, prompt, response)

    async def diagnose(self, tenant: str, incident: str, context: dict[str, Any], allowed: list[str],
                       secrets: list[str], dissent_confidence: int) -> Diagnosis:
        """Ask both models (bounded by the client's timeout and retries), record every exchange,
        and combine. Without a key, or when both fail: the heuristic, actor ``system``."""
        if self.settings is None:
            return self._heuristic(context, "no AI key is configured")
        models = self.settings.models
        answers = await asyncio.gather(*(self._ask(m, lens, context, allowed, secrets)
                                         for m, lens in zip(models, LENSES)))
        for answer in answers:
            await self._record(tenant, incident, answer)
        good = [a for a in answers if a.theory is not None]
        notes = tuple(f"{a.model}: {a.error}" for a in answers if a.error)
        if not good:
            return self._heuristic(context, "; ".join(notes) or "both models failed")
        names = tuple(a.model for a in good)
        if len(good) == 1:
            t = good[0].theory
            assert t is not None
            return Diagnosis("single_model", t.source, t.confidence, (t,),
                             f"single model ({good[0].model}); the other failed: {t.root_cause}", names, notes)
        a, b = good[0].theory, good[1].theory
        assert a is not None and b is not None
        actor = f"ai:{names[0]}+{names[1]}"
        if a.category == b.category:
            lead = a if a.confidence >= b.confidence else b
            return Diagnosis("consensus", actor, combine(a.confidence, b.confidence), (lead, b if lead is a else a),
                             f"both models: {a.category}. {lead.root_cause}", names, notes)
        if min(a.confidence, b.confidence) >= dissent_confidence:
            return Diagnosis("dissent", actor, max(a.confidence, b.confidence), (a, b),
                             f"the models disagree: {a.category} vs {b.category}", names, notes)
        lead, other = (a, b) if a.confidence >= b.confidence else (b, a)
        return Diagnosis("split", lead.source, lead.confidence, (lead, other),
                         f"the models disagree; the more confident says {lead.category}: {lead.root_cause}",
                         names, notes)

    def _heuristic(self, context: dict[str, Any], why: str) -> Diagnosis:
        t = heuristic_theory(context)
        return Diagnosis("heuristic", "system", t.confidence, (t,), f"heuristic ({why}): {t.root_cause}", (),
                         (why,))

    async def _record(self, tenant: str, incident: str, answer: Answer) -> None:
        """Store the full prompt and response; ledger their hashes, tokens and latency."""
        def write(tx: Any) -> None:
            tx.execute("INSERT INTO ai_exchanges (tenant, incident, model, prompt, response, created, input_tokens, "
                       "output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (tenant, incident, answer.model, answer.prompt, answer.response, utc_timestamp(),
                        answer.input_tokens, answer.output_tokens))
            tx.append(LedgerEvent(
                kind="ai.exchange" if answer.theory is not None else "ai.failed", tenant=tenant, incident=incident,
                actor=f"ai:{answer.model}", decision="answered" if answer.theory is not None else "failed",
                reason=answer.error or f"{answer.model} answered: {answer.theory.category}",  # type: ignore[union-attr]
                confidence=answer.theory.confidence if answer.theory else None,
                data={"model": answer.model, "prompt_sha256": hashlib.sha256(answer.prompt.encode()).hexdigest(),
                      "response_sha256": hashlib.sha256(answer.response.encode()).hexdigest(),
                      "input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
                      "latency_ms": round(answer.latency_ms, 1),
                      "dropped_action": answer.theory.dropped_action if answer.theory else None}))
        await self.db.write(write)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
