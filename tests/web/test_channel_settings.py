"""Channel secrets are checked for their provider's shape when saved: a pasted newline or another
service's token is refused at once, naming the field, and nothing is stored."""

from __future__ import annotations

import pytest

from tests.web.conftest import World

GOOD = {"telegram": {"bot_token": "7777777777:AAFakeTelegramTokenForTestsOnly_abcdefgh",
                     "webhook_secret": "tg-hook-secret-123"},
        "slack": {"bot_token": "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
                  "signing_secret": "5e1f0c9a8b7d6e5f4a3b2c1d0e9f8a7b"},
        "twilio": {"auth_token": "0123456789abcdef0123456789abcdef"},
        "webhook": {"signing_secret": "whsec_3f9a1c0e7b2d4f68a1b2c3d4"},
        "github": {"webhook_secret": "a-shared-secret"}}

# (kind, secret, value): each must be refused with 422 naming secrets.<secret>
BAD = [
    ("telegram", "bot_token", "7777777777:AAFakeTelegramTokenForTestsOnly_abcdefgh\n"),   # pasted newline
    ("telegram", "bot_token", "7777777777:AAFake Token With Spaces ForTests_abcdefgh"),
    ("telegram", "bot_token", "AAFakeTelegramTokenForTestsOnly_abcdefgh"),               # no bot id
    ("telegram", "bot_token", "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"),  # a Slack token
    ("telegram", "webhook_secret", "has space"),
    ("telegram", "webhook_secret", "x" * 257),
    ("slack", "bot_token", "7777777777:AAFakeTelegramTokenForTestsOnly_abcdefgh"),
    ("slack", "bot_token", "xoxb-abc\r\nX-Injected: 1"),
    ("slack", "signing_secret", "short"),
    ("twilio", "auth_token", "0123456789abcdef0123456789abcde"),   # 31 characters
    ("webhook", "signing_secret", "tab\tinside"),
    ("webhook", "signing_secret", "line\nbreak"),
    ("github", "webhook_secret", "\x00nul"),
    ("github", "webhook_secret", ""),
]


@pytest.mark.parametrize("kind", sorted(GOOD))
async def test_well_formed_secrets_are_saved(world: World, kind: str) -> None:
    t, auth = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    reply = await world.client.put(f"/api/tenants/{t}/notifications/channels/{kind}",
                                   json={"secrets": GOOD[kind]}, headers=auth)
    assert reply.status_code == 200, reply.text
    assert sorted(reply.json()["secrets"]) == sorted(GOOD[kind])


@pytest.mark.parametrize("kind, secret, value", BAD, ids=[f"{k}.{s}-{i}" for i, (k, s, _) in enumerate(BAD)])
async def test_malformed_secrets_are_refused_when_saved_and_nothing_is_stored(world: World, kind: str, secret: str,
                                                                             value: str) -> None:
    t, auth = world.tenants["a"], world.auth(world.keys[("a", "admin")])
    secrets = {**GOOD[kind], secret: value}
    reply = await world.client.put(f"/api/tenants/{t}/notifications/channels/{kind}", json={"secrets": secrets},
                                   headers=auth)
    # a NUL character is refused with the body itself (400), the rest by the channel's own rules
    assert reply.status_code == (400 if "\x00" in value else 422), reply.text
    assert reply.json()["error"]["field"] == f"secrets.{secret}"
    assert value not in reply.text or value == ""
    rows = world.db.read_conn().execute("SELECT count(*) FROM channels WHERE tenant = ? AND kind = ?",
                                        (t, kind)).fetchone()[0]
    assert rows == 0


