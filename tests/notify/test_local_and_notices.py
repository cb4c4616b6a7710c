"""The local channels (console, coloured on a terminal; a tenant's file and JSON-lines channels), a
person's own quiet hours, and the notices that tell responders a silence began and ended."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.notify import outbox
from alertengine.notify.channels.remote import ChannelResolver, LocalFileChannel
from alertengine.notify.gateway import ConsoleChannel, Message
from alertengine.notify.people import normalise_person, put_person
from alertengine.notify.silences import create_silence, expire_silence, normalise
from alertengine.store import Database
from tests.notify.rig import OK, START, Rig, Scripted

LINK = "https://ae.example/action/recover/SECRET-TOKEN"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_console_colours_the_priority_on_a_terminal_only(monkeypatch: Any) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    message = Message("t_1", "INC-1", "proposed", "P0", "restart?", links={"person:ada": LINK})
    tty, pipe = Tty(), io.StringIO()
    ConsoleChannel(tty).deliver(message)
    ConsoleChannel(pipe).deliver(message)
    assert tty.getvalue().startswith("\033[1;31m[P0]\033[0m t_1 INC-1 proposed: restart?")
    assert pipe.getvalue() == "[P0] t_1 INC-1 proposed: restart?\n    approval links sent to: person:ada\n"
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Tty()
    ConsoleChannel(plain).deliver(message)
    assert plain.getvalue().startswith("[P0] t_1")
    assert "SECRET-TOKEN" not in tty.getvalue() + pipe.getvalue()


async def test_a_tenants_file_and_jsonl_channels_append_without_links(db: Database, data_dir: DataDir,
                                                                      tmp_path: Path) -> None:
    resolver = ChannelResolver(db, None, None, tmp_path / "notify")  # type: ignore[arg-type]
    message = Message("t_../x", "INC-7", "proposed", "P1", "line one\nline two", links={"person:ada": LINK})
    for kind in ("file", "jsonl"):
        channel = resolver("t_../x", kind, "")
        assert isinstance(channel, LocalFileChannel)
        for _ in range(2):
            assert (await channel.send(message)).delivered
    log = (tmp_path / "notify" / "t____x.log").read_text().splitlines()   # the tenant id cannot walk out
    assert len(log) == 2 and log[0].endswith("[P1] INC-7 proposed: line one / line two")
    lines = [json.loads(x) for x in (tmp_path / "notify" / "t____x.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["proposed", "proposed"] and lines[0]["text"] == "line one\nline two"
    assert "SECRET-TOKEN" not in (tmp_path / "notify" / "t____x.jsonl").read_text() + "\n".join(log)


async def test_a_persons_own_quiet_hours_hold_what_is_below_their_threshold(rig: Rig) -> None:
    rig.routing('[[route]]\nname = "all"\nreceivers = ["person:ada", "person:bob"]\n')
    # START is 2027-01-15T08:00:00Z: 17:00 in Tokyo (Ada: quiet 16:00-09:00), 09:00 in Berlin (Bob: not quiet)
    assert datetime.fromtimestamp(START, timezone.utc) == datetime(2027, 1, 15, 8, 0, tzinfo=timezone.utc)
    for pid, zone in (("ada", "Asia/Tokyo"), ("bob", "Europe/Berlin")):
        rig.db.write_sync(put_person(normalise_person(rig.tenant, pid, {
            "name": pid.title(), "time_zone": zone, "addresses": {"telegram": "1"},
            "quiet_hours": {"start": "16:00", "end": "09:00", "suppress_below": "high"}}), "test"))
    telegram = Scripted("telegram", [OK])
    rig.channels = {"telegram": telegram}
    rig.build()
    await rig.gateway.notify(Message(rig.tenant, "INC-1", "detected", "P2", "medium: waits for Ada"))
    await rig.gateway.notify(Message(rig.tenant, "INC-2", "detected", "P1", "high: reaches both"))
    assert sorted((m.recipient, m.text) for m in telegram.got) == [
        ("person:ada", "high: reaches both"), ("person:bob", "high: reaches both"),
        ("person:bob", "medium: waits for Ada")]
    held = [r for r in rig.rows() if r.state == "held"]
    assert [(r.recipient, r.next_at) for r in held] == [("person:ada", START + 16 * 3600)]   # 09:00 in Tokyo
    rig.clock.now = START + 16 * 3600
    await rig.run_until_settled()
    assert ("person:ada", "medium: waits for Ada") in [(m.recipient, m.text) for m in telegram.got]


async def test_responders_hear_when_a_silence_begins_and_ends(data_dir: DataDir, config: Config) -> None:
    from alertengine.runtime import Runtime
    from alertengine.tenancy.tenants import create_tenant, set_shadow
    db = data_dir.open_database(config)
    try:
        runtime = Runtime(config, db, data_dir)
        tenant = db.write_sync(create_tenant("acme", "test")).id
        db.write_sync(set_shadow(tenant, False, "test"))
        chat = Scripted("telegram", [OK])
        runtime.sender.resolve = lambda t, c, a: chat
        from alertengine.notify.channels.settings import put_channel
        db.write_sync(put_channel(tenant, "telegram", {"config": {"default_chat_id": "-1"},
                                                       "secrets": {"bot_token": "123456:" + "A" * 35}},
                                  config.url_policy, runtime.vault, "test"))
        now = datetime.now(timezone.utc)
        made = db.write_sync(create_silence(normalise(tenant, {
            "matchers": ['service="batch"'], "ends_at": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "comment": "nightly batch window"}, "apikey:abc", now)))
        await runtime.silence_round()
        await runtime.silence_round()                                   # told once, not twice
        assert len(chat.got) == 1 and chat.got[0].event == "silence"
        assert "nightly batch window" in chat.got[0].text and 'service="batch"' in chat.got[0].text
        db.write_sync(expire_silence(tenant, made.id, "apikey:abc"))
        await runtime.silence_round()
        assert [m.event for m in chat.got] == ["silence", "silence"] and "is over" in chat.got[1].text
        kinds = [k for (k,) in db.read_conn().execute("SELECT kind FROM ledger WHERE tenant = ? ORDER BY seq",
                                                      (tenant,))]
        assert kinds.count("silence.ended") == 1 and kinds.count("notification.sent") == 2
        rows = outbox.listing(db.read_conn(), tenant)
        assert {r.state for r in rows} == {"delivered"}
        await runtime.http.aclose()
    finally:
        db.close()
