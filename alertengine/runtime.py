"""The appliance's running parts inside ``serve``: the poller feeding detection, the egress gateway
with its local channels, and the timer loop for stored deadlines (heartbeats)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from datetime import datetime, timezone

from .appliance import DataDir
from .config import Config, council_settings
from .alerts.evaluator import SmartAlerts
from .alerts.metrics import HostMetrics
from .alerts.stream import Hub
from .diagnosis.council import Council
from .incidents import timers
from .incidents.detection import Detector, ServiceRef, service_ref
from .ledger.entry import utc_timestamp
from .net.guard import guarded_client
from .notify.channels.remote import ChannelResolver
from .notify.channels.settings import channel_secrets
from .notify.gateway import Channel, ConsoleChannel, Gateway, JsonLinesChannel
from .notify.sender import OutboxSender
from .notify.silences import Silence, ended_untold, mark_told, silence_message, untold_created
from .recovery.approvals import ApprovalTokens
from .recovery.orchestrator import Orchestrator
from .signals import AlertSignal, HealthReading
from .signals.heartbeats import claim_missed, heartbeat_signal
from .signals.poller import Poller, PollTarget
from .store import Database
from .store.modes import ModeTracker
from .store.publish import Publisher, parse_witnesses
from .notify.shadow_report import keep_folded
from .telemetry import Telemetry
from .tenancy.vault import SecretVault

log = logging.getLogger("alertengine.runtime")


class Runtime:
    def __init__(self, config: Config, db: Database, data: DataDir, telemetry: Telemetry | None = None) -> None:
        self.db = db
        # The appliance's one Telemetry: ``serve`` makes it before the database (whose writer
        # observes into it) and hands it here. Without one: the database's, else (an app built
        # around a database opened without one, as tests do) a new one.
        self.telemetry = telemetry or db.telemetry or Telemetry()
        channels: list[Channel] = [JsonLinesChannel(data.path / "notifications.jsonl")]
        if config.console_notifications:
            channels.append(ConsoleChannel())
        self.modes = ModeTracker(db)
        self.vault = SecretVault(data.secret("vault.key"))
        # webhooks, recovery calls and chat channels: the URL policy holds at connect time
        self.http = guarded_client(config.url_policy, timeout=10.0)
        self.sender = OutboxSender(db, self.vault, ChannelResolver(db, self.vault, self.http, data.path / "notify",
                                                                   config.base_url),
                                   modes=self.modes, telemetry=self.telemetry)
        self.gateway = Gateway(db, channels, self.modes, vault=self.vault, sender=self.sender)
        self.tokens = ApprovalTokens(data.secret("token.key"), issuer=data.signer.name)
        self.orchestrator = Orchestrator(db, self.gateway, self.vault, self.tokens, config.base_url, self.http)
        self.council = Council(db, council_settings(config), url_policy=config.url_policy)
        self.hub = Hub(config.stream_buffer)
        self.detector = Detector(db, self.gateway, on_proposed=self.orchestrator.propose, council=self.council,
                                 modes=self.modes, secrets=self._known_secrets,
                                 ai_budget=(config.ai_max_retries + 1) * config.ai_timeout + 5,
                                 on_alerts=self.hub.publish, alerts_watched=self.hub.watched,
                                 telemetry=self.telemetry)
        self.smart = SmartAlerts(db, self._smart_signal, self.gateway, self.hub, HostMetrics(data.path),
                                 interval=config.smart_interval)
        self._services: dict[str, ServiceRef] = {}
        self.poller = Poller(self._targets, self._on_reading, concurrency=config.poll_concurrency,
                             timeout=config.poll_timeout, url_policy=config.url_policy, telemetry=self.telemetry)
        self.timer_interval = 1.0
        self._silence_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.publisher = Publisher(db, self.http, config.checkpoint_sink, parse_witnesses(config.witnesses))
        self.witness_interval = config.witness_interval

    def _known_secrets(self, tenant: str) -> list[str]:
        """Secret values the prompts must never carry: the tenant's channel secrets."""
        out: list[str] = []
        conn = self.db.read_conn()
        for (kind,) in conn.execute("SELECT kind FROM channels WHERE tenant = ?", (tenant,)):
            out.extend(channel_secrets(conn, tenant, kind, self.vault).values())
        return out

    def _targets(self) -> list[PollTarget]:
        targets, services = [], {}
        conn: sqlite3.Connection = self.db.read_conn()
        for tenant, service_id, name, spec in conn.execute("SELECT tenant, id, name, spec FROM services"):
            doc = json.loads(spec)
            key = f"{tenant}/{service_id}"
            services[key] = ServiceRef(tenant, service_id, name, doc.get("policy", {}))
            targets.append(PollTarget(key, doc["health_url"], float(doc.get("poll_interval", 5.0))))
        self._services = services
        return targets

    async def _on_reading(self, target: PollTarget, reading: HealthReading, lateness: float) -> None:
        service = self._services.get(target.key)
        if service is not None:
            await self.detector.on_reading(service, reading)
            await self.smart.on_reading(service.tenant, service.name, reading)

    async def _smart_signal(self, tenant: str, signal: AlertSignal) -> None:
        """A smart rule fired (or stopped): policy judges its signal like any other alert."""
        await self.detector.on_alert(tenant, signal, (await self.db.read(service_ref, tenant, signal.service)))

    async def _timers(self) -> None:
        requeued = await self.db.write(timers.requeue_unsettled)
        if requeued:
            log.warning("%d timers were claimed but not acted on to the end (a stop or a change of leader): "
                        "firing them again", requeued)
        while True:
            try:
                await self.timer_round(utc_timestamp())
            except Exception:  # noqa: BLE001 - the loop must survive; the next round retries
                log.exception("timer round failed")
            await asyncio.sleep(self.timer_interval)

    def wake_timers(self) -> None:
        """A silence was made or ended: tell its responders now rather than at the next round."""
        if not self._tasks:
            return   # not serving (a test driving the app in process): the next round does it
        task = asyncio.get_running_loop().create_task(self.silence_round())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def silence_round(self) -> None:
        """Tell the responders about silences made or ended since the last round (each once)."""
        async with self._silence_lock:
            for notice, silence in await asyncio.to_thread(self._silence_notices):
                await self.gateway.notify(silence_message(silence, notice))
                await self.db.write(mark_told(silence.tenant, silence.id, notice))

    def _silence_notices(self) -> list[tuple[str, Silence]]:
        now = datetime.now(timezone.utc)
        with self.db.reader() as conn:
            return [("created", s) for s in untold_created(conn)] + [("ended", s) for s in ended_untold(conn, now)]

    async def timer_round(self, now: str) -> None:
        """Fire what is due: missed heartbeats, then stored incident timers, then silence notices."""
        await self.silence_round()
        for beat in await self.db.write(claim_missed(now)):
            await self.detector.on_alert(beat.tenant, heartbeat_signal(beat, "firing"), None)
        for timer in await self.db.write(timers.claim_due(now)):
            try:
                if timer.kind in ("approval_expiry", "verify_recovery"):
                    await self.orchestrator.on_timer(timer)
                else:
                    await self.detector.on_timer(timer)
                await self.db.write(timers.settle([timer.id]))   # acted on: not again
            except Exception:  # noqa: BLE001 - one bad timer must not block the others
                # left unsettled: it fires again when the timer loop next starts (here or on the next leader)
                log.exception("timer %s (%s) failed", timer.id, timer.kind)

    def start(self) -> None:
        self.hub.attach(asyncio.get_running_loop())
        self._tasks = [asyncio.create_task(self.poller.run(), name="poller"),
                       asyncio.create_task(self._timers(), name="timers"),
                       asyncio.create_task(self.smart.run(), name="smart-rules"),
                       asyncio.create_task(keep_folded(self.db), name="shadow-report")]
        self.sender.start()
        loop = asyncio.get_running_loop()
        self.db.on_checkpoint = lambda cp: self.publisher.on_checkpoint(cp, loop)
        if self.publisher.sink.startswith(("http://", "https://")):
            self._tasks.append(asyncio.create_task(self.publisher.post_sink_loop(), name="checkpoint-sink"))
        if self.publisher.witnesses:
            self._tasks.append(asyncio.create_task(self.publisher.witness_loop(self.witness_interval), name="witness"))

    async def stop(self) -> None:
        if self.publisher.witnesses:   # a last round, so the witnesses see the ledger as it stops
            await asyncio.gather(self.publisher.witness(), return_exceptions=True)
        await self.poller.stop()
        with contextlib.suppress(Exception):   # the evidence summaries still being gathered
            await self.detector.flush_evidence()
        await self.sender.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.orchestrator.close()
        await asyncio.gather(*self.detector.background, return_exceptions=True)
        await self.council.close()
        await self.http.aclose()
