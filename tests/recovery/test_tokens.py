"""Approval tokens and their consumption, against expectations stated here.

Reading a token: every claim missing, of the wrong type, or of the wrong value; wrong secrets and
algorithms. Consuming an approval: single use, expiry, the proposal it belongs to, the tenant, the
two-person rule, and the reject path, with the rows and ledger entries each leaves, in a real
SQLite database under tmp_path."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from alertengine.appliance import DataDir
from alertengine.config import Config
from alertengine.errors import NotFoundError
from alertengine.incidents import engine
from alertengine.recovery import approvals
from alertengine.recovery.approvals import (
    ApprovalClaims,
    ApprovalTokens,
    TokenError,
    Verdict,
)
from alertengine.runtime import Runtime
from alertengine.store import Database
from alertengine.tenancy.tenants import create_tenant

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
LONG_SECRET = bytes(range(64))  # long enough for HS384/HS512, so PyJWT does not warn while we forge
ISSUER = "alertengine/0123456789abcdef"
AUDIENCE = "alertengine-approval"
PV = "sha256:0123456789ab"
NOW = 1_800_000_000                 # 2027-01-15T08:00:00Z
NOW_ISO = "2027-01-15T08:00:00.000000Z"
IN_5_MIN_ISO = "2027-01-15T08:05:00.000000Z"
ACTION = "restart checkout"

INVALID = ("invalid", "this approval link is not valid")
EXPIRED = ("expired", "this approval link has expired")
WRONG_AUDIENCE = ("wrong_audience", "this token is not an approval token")
WRONG_ISSUER = ("wrong_issuer", "this token was issued by another appliance")
NOT_A_TOKEN = ("invalid", "not an approval token")


# --- reading tokens ---------------------------------------------------------------------------------

@pytest.fixture
def tokens() -> ApprovalTokens:
    return ApprovalTokens(SECRET, ISSUER)


def claims_now(**changes: Any) -> dict[str, Any]:
    """A valid payload (as mint writes it), valid now, with ``changes`` applied (None value: removed)."""
    now = int(time.time())
    payload: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "INC-7", "tenant": "t_aaaaaaaaaaaaaaaa",
                               "action": ACTION, "choice": None, "recipient": "primary:Ada",
                               "jti": uuid.uuid4().hex, "iat": now, "exp": now + 300}
    for key, value in changes.items():
        if value is _DROP:
            payload.pop(key)
        else:
            payload[key] = value
    return payload


_DROP = object()


def sign(payload: dict[str, Any], key: bytes | None = SECRET, algorithm: str = "HS256", **kw: Any) -> str:
    return jwt.encode(payload, key, algorithm=algorithm, **kw)


def refusal(tokens: ApprovalTokens, token: Any) -> tuple[str, str]:
    with pytest.raises(TokenError) as info:
        tokens.read(token)
    assert str(info.value) == info.value.message
    return info.value.code, info.value.message


def test_the_secret_must_be_at_least_32_bytes() -> None:
    for short in (b"", b"x" * 16, b"x" * 31):
        with pytest.raises(ValueError, match=r"^the approval-token secret must be at least 32 bytes$"):
            ApprovalTokens(short, ISSUER)
    assert ApprovalTokens(b"x" * 32, ISSUER).issuer == ISSUER


def test_the_secret_never_shows_in_repr() -> None:
    t = ApprovalTokens(b"s3cr3t-" * 8, ISSUER)
    assert repr(t) == f"ApprovalTokens(issuer={ISSUER!r}, secret=<hidden>)"
    assert "s3cr3t" not in repr(t) and "s3cr3t" not in str(t)


def test_mint_names_everything_and_expires_after_the_ttl(tokens: ApprovalTokens) -> None:
    token, claims = tokens.mint("t_aaaaaaaaaaaaaaaa", "INC-7", ACTION, "B", "primary:Ada", ttl=120, now=NOW)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload == {"iss": ISSUER, "aud": AUDIENCE, "sub": "INC-7", "tenant": "t_aaaaaaaaaaaaaaaa",
                       "action": ACTION, "choice": "B", "recipient": "primary:Ada", "jti": claims.jti,
                       "iat": NOW, "exp": NOW + 120}
    assert claims == ApprovalClaims(claims.jti, "t_aaaaaaaaaaaaaaaa", "INC-7", ACTION, "B", "primary:Ada", NOW,
                                    NOW + 120)
    assert len(claims.jti) == 32 and int(claims.jti, 16) >= 0
    # the signature is HS256 over the token with the appliance's secret, and nothing else
    assert jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE,
                      options={"verify_exp": False, "verify_iat": False})["jti"] == claims.jti


def test_mint_defaults_five_minutes_from_now(tokens: ApprovalTokens) -> None:
    _, claims = tokens.mint("t_a", "INC-1", ACTION, None, "on-call", now=NOW)
    assert (claims.issued_at, claims.expires_at) == (NOW, NOW + 300)
    _, claims = ApprovalTokens(SECRET, ISSUER, ttl=60).mint("t_a", "INC-1", ACTION, None, "on-call", now=NOW)
    assert claims.expires_at == NOW + 60
    before = int(time.time())
    _, claims = tokens.mint("t_a", "INC-1", ACTION, None, "on-call")
    assert before <= claims.issued_at <= int(time.time()) and claims.expires_at == claims.issued_at + 300
    jtis = {tokens.mint("t_a", "INC-1", ACTION, None, "on-call")[1].jti for _ in range(20)}
    assert len(jtis) == 20


@pytest.mark.parametrize("choice", [None, "A"])
def test_a_minted_token_reads_back_to_its_claims(tokens: ApprovalTokens, choice: str | None) -> None:
    token, claims = tokens.mint("t_aaaaaaaaaaaaaaaa", "INC-7", ACTION, choice, "primary:Ada")
    assert tokens.read(token) == claims
    assert tokens.read(token).incident == "INC-7" and tokens.read(token).choice == choice


def test_a_forged_but_well_formed_payload_reads_back_field_by_field(tokens: ApprovalTokens) -> None:
    payload = claims_now(choice="B")
    assert tokens.read(sign(payload)) == ApprovalClaims(payload["jti"], payload["tenant"], payload["sub"], ACTION,
                                                        "B", "primary:Ada", payload["iat"], payload["exp"])
    payload = claims_now(choice=_DROP)  # a missing choice is the same as none
    assert tokens.read(sign(payload)).choice is None


REQUIRED_CLAIMS = ["iss", "aud", "sub", "jti", "iat", "exp", "tenant", "action", "recipient"]


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_every_required_claim_missing_is_refused(tokens: ApprovalTokens, claim: str) -> None:
    assert refusal(tokens, sign(claims_now(**{claim: _DROP}))) == INVALID


@pytest.mark.parametrize("claim,value,expected", [
    ("aud", 7, WRONG_AUDIENCE),
    ("aud", ["someone-else"], WRONG_AUDIENCE),
    ("sub", 7, INVALID), ("sub", ["INC-7"], INVALID), ("sub", None, INVALID),
    ("jti", 7, INVALID), ("jti", None, INVALID),
    ("iat", "yesterday", INVALID), ("iat", None, INVALID),
    ("exp", "tomorrow", INVALID), ("exp", None, INVALID),
    ("tenant", 7, INVALID), ("tenant", None, INVALID), ("tenant", ["t_aaaaaaaaaaaaaaaa"], INVALID),
    ("action", 7, INVALID), ("action", None, INVALID), ("action", {"a": 1}, INVALID),
    ("recipient", 7, INVALID), ("recipient", None, INVALID), ("recipient", True, INVALID),
    ("choice", 7, INVALID), ("choice", ["A"], INVALID), ("choice", False, INVALID),
])
def test_every_claim_of_the_wrong_type_is_refused(tokens: ApprovalTokens, claim: str, value: Any,
                                                   expected: tuple[str, str]) -> None:
    assert refusal(tokens, sign(claims_now(**{claim: value}))) == expected


def sign_by_hand(payload: dict[str, Any], key: bytes = SECRET) -> str:
    """HS256 without PyJWT's encoder, which refuses to write some malformed claims (a non-string iss)."""
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize("value,expected", [
    (7, WRONG_ISSUER), ([ISSUER], WRONG_ISSUER), ({"iss": ISSUER}, WRONG_ISSUER), (None, INVALID),
])
def test_an_issuer_of_the_wrong_type_is_refused(tokens: ApprovalTokens, value: Any,
                                                expected: tuple[str, str]) -> None:
    assert tokens.read(sign_by_hand(claims_now())).recipient == "primary:Ada"  # the hand-made token is sound
    assert refusal(tokens, sign_by_hand(claims_now(iss=value))) == expected


def test_the_wrong_issuer_is_refused(tokens: ApprovalTokens) -> None:
    for iss in ("alertengine/fedcba9876543210", ISSUER + " ", ISSUER.upper(), ""):
        assert refusal(tokens, sign(claims_now(iss=iss))) == WRONG_ISSUER
    # a token minted by another appliance (its own issuer and secret) is refused here, too
    other, _ = ApprovalTokens(SECRET, "alertengine/fedcba9876543210").mint("t_a", "INC-1", ACTION, None, "x")
    assert refusal(tokens, other) == WRONG_ISSUER


def test_the_wrong_audience_is_refused(tokens: ApprovalTokens) -> None:
    for aud in ("alertengine-approvals", "alertengine", AUDIENCE.upper(), AUDIENCE + " "):
        assert refusal(tokens, sign(claims_now(aud=aud))) == WRONG_AUDIENCE
    assert refusal(tokens, sign(claims_now(aud=""))) == INVALID  # an empty audience counts as none


def test_expiry_and_not_yet_valid(tokens: ApprovalTokens) -> None:
    now = int(time.time())
    assert refusal(tokens, sign(claims_now(iat=now - 600, exp=now - 1))) == EXPIRED
    assert refusal(tokens, sign(claims_now(iat=now - 600, exp=now - 300))) == EXPIRED
    assert refusal(tokens, sign(claims_now(exp=now))) == EXPIRED         # no leeway: the second it expires
    assert tokens.read(sign(claims_now(exp=now + 5))).expires_at == now + 5
    old, _ = tokens.mint("t_a", "INC-1", ACTION, None, "x", now=now - 301)
    assert refusal(tokens, old) == EXPIRED
    # issued in the future, or not valid before a future time: refused
    assert refusal(tokens, sign(claims_now(iat=now + 3600, exp=now + 3900))) == INVALID
    assert refusal(tokens, sign(claims_now(nbf=now + 3600))) == INVALID
    future, _ = tokens.mint("t_a", "INC-1", ACTION, None, "x", now=now + 3600)
    assert refusal(tokens, future) == INVALID


def test_a_wrong_secret_or_a_tampered_token_is_refused(tokens: ApprovalTokens) -> None:
    payload = claims_now()
    good = sign(payload)
    assert tokens.read(good).jti == payload["jti"]
    assert refusal(tokens, sign(payload, OTHER_SECRET)) == INVALID
    assert refusal(tokens, sign(payload, SECRET[:-1] + b"\x00")) == INVALID
    assert refusal(tokens, sign(payload, LONG_SECRET)) == INVALID
    header, body, signature = good.split(".")
    forged_body = sign(claims_now(jti=payload["jti"], tenant="t_bbbbbbbbbbbbbbbb"), OTHER_SECRET).split(".")[1]
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for bad in (f"{header}.{forged_body}.{signature}", f"{header}.{body}.{flipped}", f"{header}.{body}.",
                f"{header}.{body}", good[:-1], good + "A", f"{header}.{body}.{signature}.{signature}", "",
                "not-a-token", "a.b.c"):
        assert refusal(tokens, bad) == INVALID, bad


@pytest.mark.parametrize("algorithm", ["none", "HS384", "HS512"])
def test_only_hs256_is_accepted(algorithm: str) -> None:
    t = ApprovalTokens(LONG_SECRET, ISSUER)
    payload = claims_now()
    key = None if algorithm == "none" else LONG_SECRET
    assert refusal(t, sign(payload, key, algorithm)) == INVALID
    # the same payload signed the one accepted way is fine
    assert t.read(sign(payload, LONG_SECRET)).jti == payload["jti"]


def test_alg_none_with_an_empty_signature_and_a_lying_header_are_refused(tokens: ApprovalTokens) -> None:
    payload = claims_now()
    unsigned = sign(payload, None, "none")
    assert unsigned.endswith(".")
    assert refusal(tokens, unsigned) == INVALID
    lying = sign(payload, LONG_SECRET, "HS512", headers={"alg": "HS256"})
    assert refusal(tokens, lying) == INVALID


@pytest.mark.parametrize("value", [None, 7, b"abc", ["a.b.c"], {"token": "x"}])
def test_not_a_string_is_not_a_token(tokens: ApprovalTokens, value: Any) -> None:
    assert refusal(tokens, value) == NOT_A_TOKEN


def _token_of_length(length: int) -> str:
    start = max(0, (length - len(sign(claims_now()))) * 3 // 4 - 8)  # base64url: 4 characters per 3 bytes
    for pad in range(start, start + 32):
        for extra in range(3):
            token = sign(claims_now(recipient="r" * pad, action=ACTION + "!" * extra))
            if len(token) == length:
                return token
    raise AssertionError(f"no token of length {length}")


def test_tokens_are_limited_to_4096_characters(tokens: ApprovalTokens) -> None:
    at_limit = _token_of_length(4096)
    assert len(tokens.read(at_limit).recipient) > 2000
    assert refusal(tokens, _token_of_length(4097)) == NOT_A_TOKEN
    assert refusal(tokens, "x" * 4097) == NOT_A_TOKEN
    assert refusal(tokens, "x" * 100_000) == NOT_A_TOKEN


def test_token_error_carries_code_and_message() -> None:
    e = TokenError("expired", "gone")
    assert (e.code, e.message, str(e)) == ("expired", "gone", "gone")


# --- consuming approvals ------------------------------------------------------------------------------

@dataclass
class Scene:
    db: Database
    tokens: ApprovalTokens
    tenant: str
    other: str  # a second tenant, with its own INC-1

    def proposed(self, tenant: str | None = None, fp: str = "health:checkout") -> engine.Incident:
        tenant = tenant or self.tenant
        opening = engine.Opening(tenant, fp, "poller", "checkout down", "P1", None, "checkout", ACTION, PV, "test", {})
        inc, _ = self.db.write_sync(engine.open_incident(opening))
        return engine.run_sync(self.db, engine.transition(tenant, inc.id, engine.PROPOSED, "policy",
                                                          reason="policy proposes", policy_version=PV))

    def repropose(self, inc: engine.Incident, via: str = engine.EXPIRED) -> engine.Incident:
        actor = "system" if via == engine.EXPIRED else "engineer:someone"
        engine.run_sync(self.db, engine.transition(inc.tenant, inc.id, via, actor, reason="closed"))
        return engine.run_sync(self.db, engine.transition(inc.tenant, inc.id, engine.PROPOSED, "policy",
                                                          reason="policy proposes again", policy_version=PV))

    def request(self, inc: engine.Incident, recipient: str = "primary:Ada", choice: str | None = None,
                now: int | None = None, ttl: float | None = None) -> tuple[str, ApprovalClaims, str]:
        token, claims = self.tokens.mint(inc.tenant, inc.id, inc.action or "", choice, recipient, ttl=ttl, now=now)
        ref = approvals.new_ref()
        self.db.write_sync(approvals.record_request(claims, ref, "link", PV))
        return token, claims, ref

    def consume(self, jti: str | None, approver: str, decision: str = "approve", *, tenant: str | None = None,
                required: int = 1, now: str | None = None, ref: str | None = None, via: str = "link") -> Verdict:
        return self.db.write_sync(approvals.consume((jti, ref), tenant or self.tenant, approver, decision, via,
                                                    required, PV, now=now))

    def incident(self, inc_id: str = "INC-1", tenant: str | None = None) -> engine.Incident:
        return engine.get_incident(self.db.read_conn(), tenant or self.tenant, inc_id)

    def ledger(self, kind: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        rows = self.db.read_conn().execute("SELECT body FROM ledger WHERE tenant = ? ORDER BY seq",
                                           (tenant or self.tenant,))
        entries = [json.loads(r[0]) for r in rows]
        return [e for e in entries if kind is None or e["kind"] == kind]

    def row(self, jti: str) -> dict[str, Any]:
        cur = self.db.read_conn().execute("SELECT * FROM approvals WHERE jti = ?", (jti,))
        values = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], values))

    def size(self) -> int:
        return self.db.read_conn().execute("SELECT count(*) FROM ledger").fetchone()[0]


def keyed(data_dir: DataDir, value: str) -> str:
    """The recipient's fingerprint as the format defines it: HMAC-SHA256 under the install's key."""
    key = (data_dir.path / "fingerprint.key").read_bytes()
    return "hmac-sha256:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


@pytest.fixture
def scene(db: Database) -> Scene:
    a = db.write_sync(create_tenant("acme", "test")).id
    b = db.write_sync(create_tenant("globex", "test")).id
    return Scene(db, ApprovalTokens(SECRET, ISSUER), a, b)


def test_requesting_an_approval_stores_it_ledgers_it_without_secrets_and_sets_its_expiry(scene: Scene,
                                                                                       data_dir: DataDir) -> None:
    inc = scene.proposed()
    token, claims, ref = scene.request(inc, "primary:Ada", now=NOW)
    assert scene.row(claims.jti) == {
        "jti": claims.jti, "ref": ref, "tenant": scene.tenant, "incident": "INC-1", "proposal": 1, "action": ACTION,
        "choice": None, "recipient": "primary:Ada", "created": NOW_ISO, "expires": IN_5_MIN_ISO, "used_at": None,
        "used_by": None, "outcome": None}
    [entry] = scene.ledger("approval.requested")
    assert {k: entry[k] for k in ("tenant", "incident", "stage", "actor", "decision", "policy_version", "reason")} == {
        "tenant": scene.tenant, "incident": "INC-1", "stage": "PROPOSED", "actor": "policy", "decision": "requested",
        "policy_version": PV, "reason": f"approval of {ACTION!r} requested via link"}
    assert entry["data"] == {"jti": claims.jti, "action": ACTION, "choice": None,
                             "recipient": keyed(data_dir, "primary:Ada"), "channel": "link", "expires": IN_5_MIN_ISO}
    everything = b"".join(r[0] for r in scene.db.read_conn().execute("SELECT body FROM ledger"))
    assert token.encode() not in everything and b"primary:Ada" not in everything
    timers = scene.db.read_conn().execute(
        "SELECT tenant, incident, kind, due, data, done FROM timers WHERE kind = 'approval_expiry'").fetchall()
    assert timers == [(scene.tenant, "INC-1", "approval_expiry", IN_5_MIN_ISO, json.dumps({"proposal": 1}), None)]


def test_the_proposal_number_counts_this_incidents_proposals_in_this_tenant_only(scene: Scene) -> None:
    inc = scene.proposed()
    theirs = scene.proposed(scene.other)
    assert theirs.id == inc.id == "INC-1"
    scene.repropose(theirs)
    scene.repropose(theirs, engine.REJECTED)
    second = scene.proposed(fp="health:other")
    conn = scene.db.read_conn()
    assert approvals.proposal_number(conn, scene.tenant, "INC-1") == 1
    assert approvals.proposal_number(conn, scene.other, "INC-1") == 3
    assert approvals.proposal_number(conn, scene.tenant, second.id) == 1
    assert approvals.proposal_number(conn, scene.tenant, "INC-99") == 0
    scene.repropose(inc)
    assert approvals.proposal_number(scene.db.read_conn(), scene.tenant, "INC-1") == 2
    _, claims, _ = scene.request(scene.incident())
    assert scene.row(claims.jti)["proposal"] == 2


def test_find_approval_by_jti_or_ref_within_the_tenant(scene: Scene) -> None:
    inc = scene.proposed()
    _, claims, ref = scene.request(inc)
    conn = scene.db.read_conn()
    by_jti = approvals.find_approval(conn, jti=claims.jti, tenant=scene.tenant)
    by_ref = approvals.find_approval(conn, ref=ref, tenant=scene.tenant)
    assert by_jti == by_ref and (by_jti.jti, by_jti.ref, by_jti.tenant) == (claims.jti, ref, scene.tenant)
    assert approvals.find_approval(conn, jti=claims.jti) == by_jti
    for kw in ({"jti": claims.jti, "tenant": scene.other}, {"ref": ref, "tenant": scene.other},
               {"jti": uuid.uuid4().hex}, {"ref": "abcdefghijkm"}, {"jti": claims.jti[:-1], "tenant": scene.tenant}):
        with pytest.raises(NotFoundError) as info:
            approvals.find_approval(conn, **kw)
        assert info.value.what == "approval"


def test_an_approval_authorizes_once_and_is_ledgered_with_the_approver(scene: Scene) -> None:
    inc = scene.proposed()
    _, claims, _ = scene.request(inc)
    at = "2030-01-01T00:00:00.000000Z"
    verdict = scene.consume(claims.jti, "link:primary:Ada", now=None)
    assert verdict.outcome == "authorized" and verdict.accepted
    assert verdict.approvers == ("link:primary:Ada",) and verdict.detail == ""
    assert verdict.incident.stage == engine.AUTHORIZED and scene.incident().stage == engine.AUTHORIZED
    row = scene.row(claims.jti)
    assert (row["used_by"], row["outcome"]) == ("link:primary:Ada", "approved") and row["used_at"] is not None
    assert verdict.approval.used_at == row["used_at"] and verdict.approval.used_by == "link:primary:Ada"
    assert verdict.approval.outcome == "approved"
    [entry] = scene.ledger("incident.authorized")
    assert {k: entry[k] for k in ("incident", "stage", "actor", "decision", "policy_version", "reason")} == {
        "incident": "INC-1", "stage": "AUTHORIZED", "actor": "engineer:link:primary:Ada", "decision": "authorized",
        "policy_version": PV, "reason": "authorized by link:primary:Ada"}
    assert entry["data"] == {"jti": claims.jti, "action": ACTION, "choice": None, "via": "link",
                             "approver": "link:primary:Ada", "approvers": ["link:primary:Ada"], "required": 1}
    # single use: the same approval again (approve or reject, by anyone, at any time) changes nothing
    before = scene.size()
    for approver, decision in (("link:primary:Ada", "approve"), ("telegram:222", "reject")):
        again = scene.consume(claims.jti, approver, decision, now=at)
        assert again.outcome == "already_used" and not again.accepted
        assert again.detail == f"already used by link:primary:Ada at {row['used_at']}"
        assert again.incident.stage == engine.AUTHORIZED
    assert scene.size() == before and scene.row(claims.jti) == row
    assert scene.incident().stage == engine.AUTHORIZED


def test_an_approval_is_used_at_the_time_given(scene: Scene) -> None:
    _, claims, _ = scene.request(scene.proposed(), now=int(time.time()))
    verdict = scene.consume(claims.jti, "link:primary:Ada", now="2000-01-01T00:00:00.000000Z")
    assert verdict.approval.used_at == scene.row(claims.jti)["used_at"] == "2000-01-01T00:00:00.000000Z"


def test_reject_moves_the_incident_to_rejected_with_the_approver_ledgered(scene: Scene) -> None:
    inc = scene.proposed()
    _, ada, ada_ref = scene.request(inc, "primary:Ada")
    _, grace, _ = scene.request(inc, "secondary:Grace")
    verdict = scene.consume(None, "telegram:111", "reject", ref=ada_ref, via="telegram")
    assert verdict.outcome == "rejected" and verdict.accepted and verdict.approvers == ()
    assert verdict.incident.stage == engine.REJECTED and scene.incident().stage == engine.REJECTED
    assert verdict.approval.outcome == "rejected" and verdict.approval.used_by == "telegram:111"
    row = scene.row(ada.jti)
    assert (row["used_by"], row["outcome"]) == ("telegram:111", "rejected") and row["used_at"] is not None
    [entry] = scene.ledger("incident.rejected")
    assert {k: entry[k] for k in ("incident", "stage", "actor", "decision", "policy_version", "reason")} == {
        "incident": "INC-1", "stage": "REJECTED", "actor": "engineer:telegram:111", "decision": "rejected",
        "policy_version": PV, "reason": "telegram:111 rejected the action"}
    assert entry["data"] == {"jti": ada.jti, "action": ACTION, "choice": None, "via": "telegram",
                             "approver": "telegram:111"}
    # the rejected proposal cannot then be approved, by the other link or by the used one
    before = scene.size()
    late = scene.consume(grace.jti, "link:secondary:Grace")
    assert late.outcome == "not_proposed" and not late.accepted
    assert late.detail == "the approval is not proposed" and late.incident.stage == engine.REJECTED
    assert scene.row(grace.jti)["used_at"] is None and scene.row(grace.jti)["outcome"] is None
    [refused] = scene.ledger("approval.refused")
    assert {k: refused[k] for k in ("incident", "stage", "actor", "decision", "policy_version", "reason")} == {
        "incident": "INC-1", "stage": "REJECTED", "actor": "engineer:link:secondary:Grace",
        "decision": "not_proposed", "policy_version": PV, "reason": "approval refused: not_proposed"}
    assert refused["data"] == {"jti": grace.jti, "via": "link"}
    assert scene.consume(ada.jti, "telegram:111").outcome == "already_used"
    assert scene.size() == before + 1
    assert scene.incident().stage == engine.REJECTED and scene.ledger("incident.authorized") == []


def test_reject_or_approve_with_another_tenant_is_refused_as_not_found(scene: Scene) -> None:
    inc = scene.proposed()
    scene.proposed(scene.other)  # the other tenant has an INC-1 too, and it is PROPOSED
    _, claims, ref = scene.request(inc)
    before = scene.size()
    for decision in ("reject", "approve"):
        with pytest.raises(NotFoundError):
            scene.consume(claims.jti, "link:primary:Ada", decision, tenant=scene.other)
        with pytest.raises(NotFoundError):
            scene.consume(None, "telegram:111", decision, tenant=scene.other, ref=ref)
    assert scene.size() == before
    assert scene.row(claims.jti)["used_at"] is None
    assert scene.incident().stage == engine.PROPOSED
    assert scene.incident(tenant=scene.other).stage == engine.PROPOSED
    assert scene.consume(claims.jti, "link:primary:Ada", "reject").outcome == "rejected"  # its own tenant may


def test_a_link_from_an_earlier_proposal_is_refused_after_a_re_proposal(scene: Scene) -> None:
    inc = scene.proposed()
    _, first, _ = scene.request(inc)
    scene.db.write_sync(approvals.expire(scene.tenant, "INC-1", 1, PV))
    assert scene.incident().stage == engine.EXPIRED
    engine.run_sync(scene.db, engine.transition(scene.tenant, "INC-1", engine.PROPOSED, "policy",
                                                reason="policy proposes again", policy_version=PV))
    assert scene.incident().stage == engine.PROPOSED
    assert scene.row(first.jti)["outcome"] == "expired"
    old = scene.consume(first.jti, "link:primary:Ada")
    assert old.outcome == "not_proposed" and old.incident.stage == engine.PROPOSED
    assert scene.incident().stage == engine.PROPOSED and scene.row(first.jti)["used_at"] is None
    assert [e["decision"] for e in scene.ledger("approval.refused")] == ["not_proposed"]
    _, second, _ = scene.request(scene.incident())
    assert scene.row(second.jti)["proposal"] == 2
    assert scene.consume(second.jti, "link:primary:Ada").outcome == "authorized"


def test_a_link_from_an_earlier_proposal_is_refused_even_if_never_expired(scene: Scene) -> None:
    """Rejected via one link, re-proposed: the other, unused link of the first proposal is dead."""
    inc = scene.proposed()
    _, ada, _ = scene.request(inc, "primary:Ada")
    _, grace, _ = scene.request(inc, "secondary:Grace")
    assert scene.consume(ada.jti, "link:primary:Ada", "reject").outcome == "rejected"
    engine.run_sync(scene.db, engine.transition(scene.tenant, "INC-1", engine.PROPOSED, "policy",
                                                reason="policy proposes again", policy_version=PV))
    verdict = scene.consume(grace.jti, "link:secondary:Grace")
    assert verdict.outcome == "not_proposed" and scene.incident().stage == engine.PROPOSED


def test_an_expired_approval_is_refused_and_ledgered(scene: Scene) -> None:
    inc = scene.proposed()
    _, claims, _ = scene.request(inc, now=NOW)   # expires IN_5_MIN_ISO
    late = scene.consume(claims.jti, "link:primary:Ada", now="2027-01-15T08:05:00.000001Z")
    assert late.outcome == "expired" and not late.accepted and late.detail == "the approval is expired"
    assert scene.row(claims.jti)["used_at"] is None and scene.incident().stage == engine.PROPOSED
    [entry] = scene.ledger("approval.refused")
    assert {k: entry[k] for k in ("stage", "actor", "decision", "reason")} == {
        "stage": "PROPOSED", "actor": "engineer:link:primary:Ada", "decision": "expired",
        "reason": "approval refused: expired"}
    assert entry["data"] == {"jti": claims.jti, "via": "link"}
    # at the very instant of expiry it is still good
    on_time = scene.consume(claims.jti, "link:primary:Ada", now=IN_5_MIN_ISO)
    assert on_time.outcome == "authorized"


def test_no_decision_but_approve_or_reject(scene: Scene) -> None:
    for decision in ("", "Approve", "accept", "yes", "rejected"):
        with pytest.raises(ValueError, match=r"^decision must be approve or reject$"):
            approvals.consume(("x", None), scene.tenant, "someone", decision, "link", 1, PV)


def test_two_person_rule_counts_distinct_people_for_the_same_choice(scene: Scene) -> None:
    inc = scene.proposed()
    _, ada, _ = scene.request(inc, "primary:Ada")
    _, ada2, _ = scene.request(inc, "primary:Ada")
    _, grace, _ = scene.request(inc, "secondary:Grace")
    first = scene.consume(ada.jti, "link:primary:Ada", required=2)
    assert first.outcome == "waiting" and first.accepted
    assert first.approvers == ("link:primary:Ada",) and first.detail == "1 of 2 approvals"
    assert first.incident.stage == engine.PROPOSED and scene.incident().stage == engine.PROPOSED
    [granted] = scene.ledger("approval.granted")
    assert {k: granted[k] for k in ("stage", "actor", "decision", "reason", "policy_version")} == {
        "stage": "PROPOSED", "actor": "engineer:link:primary:Ada", "decision": "waiting",
        "reason": "1 of 2 distinct approvals", "policy_version": PV}
    assert granted["data"] == {"jti": ada.jti, "action": ACTION, "choice": None, "via": "link",
                               "approver": "link:primary:Ada", "approvers": ["link:primary:Ada"], "required": 2}
    same_person = scene.consume(ada2.jti, "link:primary:Ada", required=2)
    assert same_person.outcome == "waiting" and same_person.approvers == ("link:primary:Ada",)
    assert scene.incident().stage == engine.PROPOSED
    second = scene.consume(grace.jti, "link:secondary:Grace", required=2)
    assert second.outcome == "authorized" and second.approvers == ("link:primary:Ada", "link:secondary:Grace")
    assert scene.incident().stage == engine.AUTHORIZED
    [entry] = scene.ledger("incident.authorized")
    assert entry["reason"] == "authorized by link:primary:Ada, link:secondary:Grace"
    assert entry["data"]["approvers"] == ["link:primary:Ada", "link:secondary:Grace"] and entry["data"]["required"] == 2


def test_two_person_rule_counts_a_persons_link_and_their_chat_approval_once(scene: Scene) -> None:
    inc = scene.proposed()
    _, link, _ = scene.request(inc, "person:ada")
    _, shared, _ = scene.request(inc, "chat")
    _, grace, _ = scene.request(inc, "person:grace")
    assert scene.consume(link.jti, "link:person:ada", required=2).outcome == "waiting"
    # Ada again, from a shared chat: the same person, so still one of two
    again = scene.consume(shared.jti, "person:ada", required=2, via="telegram")
    assert (again.outcome, again.detail) == ("waiting", "1 of 2 approvals")
    assert scene.incident().stage == engine.PROPOSED
    second = scene.consume(grace.jti, "person:grace", required=2, via="slack")
    assert second.outcome == "authorized" and scene.incident().stage == engine.AUTHORIZED


def test_two_person_rule_does_not_mix_choices_proposals_or_rejections(scene: Scene) -> None:
    inc = scene.proposed()
    _, ada_a, _ = scene.request(inc, "primary:Ada", choice="A")
    _, grace_b, _ = scene.request(inc, "secondary:Grace", choice="B")
    _, bob_a, _ = scene.request(inc, "tertiary:Bob", choice="A")
    assert scene.consume(ada_a.jti, "link:primary:Ada", required=2).outcome == "waiting"
    b = scene.consume(grace_b.jti, "link:secondary:Grace", required=2)
    assert b.outcome == "waiting" and b.approvers == ("link:secondary:Grace",)
    assert scene.incident().stage == engine.PROPOSED
    a = scene.consume(bob_a.jti, "link:tertiary:Bob", required=2)
    assert a.outcome == "authorized" and a.approvers == ("link:primary:Ada", "link:tertiary:Bob")
    assert scene.ledger("incident.authorized")[0]["data"]["choice"] == "A"


def test_approvals_of_another_tenant_or_incident_do_not_count_toward_two(scene: Scene) -> None:
    inc = scene.proposed()
    theirs = scene.proposed(scene.other)
    other_inc = scene.proposed(fp="health:other")
    _, mine, _ = scene.request(inc, "primary:Ada")
    _, foreign, _ = scene.request(theirs, "secondary:Grace")
    _, elsewhere, _ = scene.request(other_inc, "secondary:Grace")
    assert scene.consume(foreign.jti, "link:secondary:Grace", tenant=scene.other, required=2).outcome == "waiting"
    assert scene.consume(elsewhere.jti, "link:secondary:Grace", required=2).outcome == "waiting"
    verdict = scene.consume(mine.jti, "link:primary:Ada", required=2)
    assert verdict.outcome == "waiting" and verdict.approvers == ("link:primary:Ada",)


def test_a_rejected_approval_does_not_count_as_an_approver(scene: Scene) -> None:
    """Two-person rule with one person rejecting: that is a rejection, not half an authorization."""
    inc = scene.proposed()
    _, ada, _ = scene.request(inc, "primary:Ada")
    _, grace, _ = scene.request(inc, "secondary:Grace")
    assert scene.consume(ada.jti, "link:primary:Ada", "reject", required=2).outcome == "rejected"
    assert scene.consume(grace.jti, "link:secondary:Grace", required=2).outcome == "not_proposed"
    assert scene.incident().stage == engine.REJECTED


def test_the_window_closing_expires_the_proposal_and_its_unused_approvals(scene: Scene) -> None:
    inc = scene.proposed()
    theirs = scene.proposed(scene.other)
    _, used, _ = scene.request(inc, "primary:Ada")
    _, unused, _ = scene.request(inc, "secondary:Grace")
    _, foreign, _ = scene.request(theirs, "primary:Ada")
    assert scene.consume(used.jti, "link:primary:Ada", required=2).outcome == "waiting"
    assert scene.db.write_sync(approvals.expire(scene.tenant, "INC-1", 2, PV)) is None  # not this proposal
    assert scene.incident().stage == engine.PROPOSED and scene.row(unused.jti)["outcome"] is None
    moved = scene.db.write_sync(approvals.expire(scene.tenant, "INC-1", 1, PV))
    assert isinstance(moved, engine.Incident) and moved.stage == engine.EXPIRED
    assert scene.incident().stage == engine.EXPIRED
    assert scene.row(unused.jti)["outcome"] == "expired" and scene.row(used.jti)["outcome"] == "approved"
    assert scene.row(foreign.jti)["outcome"] is None
    assert scene.incident(tenant=scene.other).stage == engine.PROPOSED
    [entry] = scene.ledger("incident.expired")
    assert {k: entry[k] for k in ("stage", "actor", "decision", "reason", "policy_version")} == {
        "stage": "EXPIRED", "actor": "system", "decision": "expired",
        "reason": "no approval in time: the proposal expired", "policy_version": PV}
    # once no longer PROPOSED, the window closing again does nothing
    before = scene.size()
    assert scene.db.write_sync(approvals.expire(scene.tenant, "INC-1", 1, PV)) is None
    assert scene.size() == before


def test_expire_needs_the_incident_to_exist_in_that_tenant(scene: Scene) -> None:
    scene.proposed()
    with pytest.raises(NotFoundError):
        scene.db.write_sync(approvals.expire(scene.other, "INC-1", 1, PV))
    assert scene.incident().stage == engine.PROPOSED


def test_a_stale_read_still_cannot_use_an_approval_twice(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """The UPDATE itself only takes an unused approval: even if the approval were read as unused
    after someone used it (the guarantee the schema keeps, beyond the single writer), the second
    use authorizes nothing."""
    inc = scene.proposed()
    _, claims, _ = scene.request(inc)
    assert scene.consume(claims.jti, "link:primary:Ada", required=2).outcome == "waiting"
    used = approvals.find_approval(scene.db.read_conn(), jti=claims.jti)
    stale = dataclasses.replace(used, used_at=None, used_by=None, outcome=None)
    monkeypatch.setattr(approvals, "find_approval", lambda *a, **kw: stale)
    before, row = scene.size(), scene.row(claims.jti)
    verdict = scene.consume(claims.jti, "link:secondary:Grace", required=2)
    assert verdict.outcome == "already_used" and verdict.detail == "already used" and not verdict.accepted
    assert verdict.approval == stale and verdict.incident.stage == engine.PROPOSED
    assert scene.size() == before and scene.row(claims.jti) == row
    assert scene.incident().stage == engine.PROPOSED


def test_claims_approvals_and_verdicts_are_immutable(scene: Scene) -> None:
    inc = scene.proposed()
    _, claims, _ = scene.request(inc)
    approval = approvals.find_approval(scene.db.read_conn(), jti=claims.jti)
    verdict = Verdict("waiting", inc, approval)
    for obj, name in ((claims, "tenant"), (approval, "used_at"), (verdict, "outcome")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, "x")


def test_verdicts_say_which_outcomes_were_accepted(scene: Scene) -> None:
    inc = scene.proposed()
    _, claims, _ = scene.request(inc)
    approval = approvals.find_approval(scene.db.read_conn(), jti=claims.jti)
    accepted = {o: Verdict(o, inc, approval).accepted for o in
                ("authorized", "rejected", "waiting", "already_used", "expired", "not_proposed", "not_an_approver")}
    assert accepted == {"authorized": True, "rejected": True, "waiting": True, "already_used": False,
                        "expired": False, "not_proposed": False, "not_an_approver": False}


def test_a_refused_transition_is_raised_not_returned(scene: Scene) -> None:
    inc = scene.proposed()
    _, claims, _ = scene.request(inc)
    approval = approvals.find_approval(scene.db.read_conn(), jti=claims.jti)
    error = engine.IllegalTransitionError("INC-1", "PROPOSED", "AUTHORIZED", "policy")
    with pytest.raises(engine.IllegalTransitionError):
        approvals._verdict(error, "authorized", approval)
    ok = approvals._verdict(inc, "authorized", approval, ("a",))
    assert (ok.outcome, ok.incident, ok.approval, ok.approvers) == ("authorized", inc, approval, ("a",))


def test_idempotency_keys_are_stable_per_approval_and_differ_between_approvals() -> None:
    key = approvals.idempotency_key("t_a", "INC-1", "jti-1")
    assert key == hashlib.sha256(b"t_a|INC-1|jti-1").hexdigest()[:32]
    assert key == approvals.idempotency_key("t_a", "INC-1", "jti-1")
    others = {approvals.idempotency_key(*args) for args in
              (("t_a", "INC-1", "jti-2"), ("t_b", "INC-1", "jti-1"), ("t_a", "INC-2", "jti-1"))}
    assert key not in others and len(others) == 3


def test_chat_references_are_short_unambiguous_and_random() -> None:
    assert approvals.REF_ALPHABET == "abcdefghijkmnpqrstuvwxyz23456789"  # no l, o, 0, 1
    refs = {approvals.new_ref() for _ in range(200)}
    assert len(refs) == 200
    for ref in refs:
        assert len(ref) == 12 and set(ref) <= set("abcdefghijkmnpqrstuvwxyz23456789")
        assert len(f"ap:{ref}:y".encode()) <= 64  # Telegram's callback_data limit
    assert approvals.AUDIENCE == AUDIENCE and approvals.ALGORITHM == "HS256"


# --- the link, end to end through the orchestrator -----------------------------------------------------

@pytest.fixture
async def runtime(data_dir: DataDir, db: Database) -> AsyncIterator[Runtime]:
    config = Config(data_dir=data_dir.path, checkpoint_interval=0.2, console_notifications=False)
    rt = Runtime(config, db, data_dir)
    yield rt
    await rt.orchestrator.close()
    await rt.http.aclose()


def _linked(rt: Runtime, db: Database, recipients: tuple[str, ...] = ("primary:Ada", "secondary:Grace")) \
        -> tuple[Scene, list[tuple[str, ApprovalClaims]]]:
    a = db.write_sync(create_tenant("acme", "test")).id
    b = db.write_sync(create_tenant("globex", "test")).id
    scene = Scene(db, rt.tokens, a, b)
    inc = scene.proposed()
    links = []
    for person in recipients:
        token, claims, _ = scene.request(inc, person)
        links.append((token, claims))
    return scene, links


def _forge(rt: Runtime, claims: ApprovalClaims, **changes: Any) -> str:
    """A token signed with the appliance's own secret, naming ``claims.jti`` but other values."""
    payload = {"iss": rt.tokens.issuer, "aud": AUDIENCE, "sub": claims.incident, "tenant": claims.tenant,
               "action": claims.action, "choice": claims.choice, "recipient": claims.recipient, "jti": claims.jti,
               "iat": claims.issued_at, "exp": claims.expires_at}
    payload.update(changes)
    return jwt.encode(payload, rt.tokens._secret, algorithm="HS256")


async def test_a_link_approves_as_its_recipient_and_only_once(runtime: Runtime, db: Database) -> None:
    scene, [(token, claims), _] = _linked(runtime, db)
    verdict = await runtime.orchestrator.decide_by_link(token, "reject")
    assert verdict.outcome == "rejected" and scene.incident().stage == engine.REJECTED
    [entry] = scene.ledger("incident.rejected")
    assert entry["actor"] == "engineer:link:primary:Ada" and entry["data"]["approver"] == "link:primary:Ada"
    assert entry["data"]["via"] == "link" and entry["data"]["jti"] == claims.jti
    again = await runtime.orchestrator.decide_by_link(token, "approve")
    assert again.outcome == "already_used" and scene.incident().stage == engine.REJECTED


async def test_a_link_refuses_bad_tokens_before_touching_anything(runtime: Runtime, db: Database) -> None:
    scene, [(token, claims), _] = _linked(runtime, db)
    before = scene.size()
    bad = {
        "other secret": jwt.encode(jwt.decode(token, options={"verify_signature": False}), OTHER_SECRET,
                                   algorithm="HS256"),
        "wrong issuer": _forge(runtime, claims, iss="alertengine/fedcba9876543210"),
        "wrong audience": _forge(runtime, claims, aud="alertengine-other"),
        "expired": _forge(runtime, claims, iat=int(time.time()) - 600, exp=int(time.time()) - 1),
        "alg none": jwt.encode(jwt.decode(token, options={"verify_signature": False}), None, algorithm="none"),
    }
    codes = {}
    for label, forged in bad.items():
        with pytest.raises(TokenError) as info:
            await runtime.orchestrator.decide_by_link(forged, "approve")
        codes[label] = info.value.code
    assert codes == {"other secret": "invalid", "wrong issuer": "wrong_issuer", "wrong audience": "wrong_audience",
                     "expired": "expired", "alg none": "invalid"}
    assert scene.size() == before and scene.incident().stage == engine.PROPOSED
    assert scene.row(claims.jti)["used_at"] is None


async def test_a_link_naming_another_tenant_or_an_unknown_jti_is_not_found(runtime: Runtime, db: Database) -> None:
    scene, [(_, claims), _] = _linked(runtime, db)
    scene.proposed(scene.other)  # the other tenant's INC-1 exists and is PROPOSED
    before = scene.size()
    for forged in (_forge(runtime, claims, tenant=scene.other), _forge(runtime, claims, jti=uuid.uuid4().hex)):
        for decision in ("reject", "approve"):
            with pytest.raises(NotFoundError):
                await runtime.orchestrator.decide_by_link(forged, decision)
    assert scene.size() == before
    assert scene.incident().stage == engine.PROPOSED and scene.incident(tenant=scene.other).stage == engine.PROPOSED
    assert scene.row(claims.jti)["used_at"] is None





@pytest.mark.parametrize("claim,value", [
    ("sub", "INC-2"), ("action", "drop the database"), ("recipient", "primary:Mallory"), ("choice", "B"),
])
async def test_a_link_whose_claims_disagree_with_its_approval_is_refused(runtime: Runtime, db: Database,
                                                                       claim: str, value: str) -> None:
    scene, [(_, claims), _] = _linked(runtime, db)
    scene.proposed(fp="health:second")  # INC-2, PROPOSED
    forged = _forge(runtime, claims, **{claim: value})
    with pytest.raises((NotFoundError, TokenError)):
        await runtime.orchestrator.decide_by_link(forged, "approve")
    assert scene.incident().stage == engine.PROPOSED and scene.row(claims.jti)["used_at"] is None
