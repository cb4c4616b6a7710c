"""Ingest parsers: real Alertmanager captures, Grafana, PagerDuty and generic events into signals,
and refusal of malformed bodies with the JSON path of the problem."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Callable, Iterator

import pytest

from alertengine.errors import FieldError
from alertengine.signals import SEVERITIES, AlertSignal
from alertengine.signals.ingest import (
    PayloadError,
    parse_alertmanager,
    parse_event,
    parse_grafana,
    parse_pagerduty,
)
from tests.conftest import FIXTURES as ALL_FIXTURES

FIXTURES = ALL_FIXTURES / "alertmanager"
ROUTING_KEY = "e93facc04764012d7bfb002500d5d1a6"
HEX16 = re.compile(r"[0-9a-f]{16}")
HEX32 = re.compile(r"[0-9a-f]{32}")
DROP = object()  # a field value meaning "leave the field out"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def am_alert(**changes: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "status": "firing", "labels": {"alertname": "ProbeFailure", "severity": "critical"},
        "annotations": {"summary": "Probe failure"}, "startsAt": "2023-02-06T13:08:45.828Z",
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom.example:9090/graph?g0.expr=up",
        "fingerprint": "1a30ba71cca2921f"}
    alert.update(changes)
    return {k: v for k, v in alert.items() if v is not DROP}


def am_body(*alerts: dict[str, Any], version: str = "4") -> dict[str, Any]:
    return {"version": version, "groupKey": '{}:{alertname="ProbeFailure"}', "truncatedAlerts": 0,
            "status": "firing", "receiver": "appliance", "groupLabels": {"alertname": "ProbeFailure"},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am.example:9093",
            "alerts": list(alerts) if alerts else [am_alert()]}


# Grafana's documented webhook example: Alertmanager's shape plus Grafana's own fields, one firing and one resolved.
GRAFANA_BODY: dict[str, Any] = {
    "receiver": "appliance", "status": "firing", "orgId": 1, "version": "1",
    "groupKey": '{}/{grafana_folder="infra"}:{alertname="HighCPU"}', "truncatedAlerts": 0,
    "groupLabels": {"alertname": "HighCPU"}, "commonLabels": {"alertname": "HighCPU", "team": "blue"},
    "commonAnnotations": {}, "externalURL": "http://grafana.example:3000/",
    "title": "[FIRING:1, RESOLVED:1] HighCPU (blue)", "state": "alerting",
    "message": "**Firing**\n\nValue: B=94.2, C=1\n",
    "alerts": [
        {"status": "firing",
         "labels": {"alertname": "HighCPU", "grafana_folder": "infra", "team": "blue", "service": "api",
                    "severity": "warning"},
         "annotations": {"summary": "CPU above 90% on api-1"},
         "startsAt": "2024-05-02T10:15:00+02:00", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://grafana.example:3000/alerting/grafana/cdq8/view?orgId=1",
         "fingerprint": "57c6d9296de2ad39",
         "silenceURL": "http://grafana.example:3000/alerting/silence/new?alertmanager=grafana",
         "dashboardURL": "http://grafana.example:3000/d/node1?orgId=1",
         "panelURL": "http://grafana.example:3000/d/node1?orgId=1&viewPanel=2",
         "values": {"B": 94.2, "C": 1}, "valueString": "[ var='B' labels={service=api} value=94.2 ]",
         "imageURL": "", "ruleUID": "cdq8", "orgId": 1, "enrichments": None},
        {"status": "resolved", "labels": {"alertname": "HighCPU", "team": "blue", "job": "node"},
         "annotations": {}, "startsAt": "2024-05-02T09:00:00.123456789Z", "endsAt": "2024-05-02T10:05:00Z",
         "generatorURL": "http://grafana.example:3000/alerting/grafana/cdq8/view?orgId=1",
         "fingerprint": "b7d2f3c1e0a9d8c7", "silenceURL": "", "dashboardURL": "", "panelURL": "",
         "values": None, "valueString": ""},
    ],
}

# PagerDuty Events API v2, as documented.
PD_TRIGGER: dict[str, Any] = {
    "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "INC-42",
    "payload": {"summary": "Disk full on db1", "source": "db1.prod", "severity": "critical",
                "timestamp": "2015-07-17T08:42:58.315+0000", "component": "postgres", "group": "prod-datapipe",
                "class": "disk", "custom_details": {"free": "0%"}},
    "client": "Appliance", "client_url": "https://appliance.local/inc/42",
    "links": [{"href": "https://example.com/runbook", "text": "runbook"}],
    "images": [{"src": "https://example.com/g.png", "href": "https://example.com", "alt": "graph"}]}
PD_ACK: dict[str, Any] = {"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "INC-42"}
PD_RESOLVE: dict[str, Any] = {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "INC-42"}
EVENT: dict[str, Any] = {"service": "checkout", "title": "Checkout p95 above 2s", "status": "firing",
                         "severity": "high", "fingerprint": "chk-p95", "labels": {"region": "eu-1"},
                         "annotations": {"runbook": "rb/checkout"}, "url": "https://grafana.local/d/x"}


def pd(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(PD_TRIGGER)
    body.update(changes)
    return body


def pd_payload(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(PD_TRIGGER)
    body["payload"].update(changes)
    body["payload"] = {k: v for k, v in body["payload"].items() if v is not DROP}
    return body


def event(**changes: Any) -> dict[str, Any]:
    return {k: v for k, v in {**EVENT, **changes}.items() if v is not DROP}


# Alertmanager ---------------------------------------------------------------------------------

def test_a_real_firing_group_gives_one_firing_signal_per_alert() -> None:
    first, second = parse_alertmanager(fixture("firing-group.json"))
    assert first == AlertSignal(
        source="alertmanager", fingerprint="3fbf8b0e6f12a856", status="firing", severity="critical",
        title="P95 latency 2.8s", service="checkout",
        labels={"alertname": "CheckoutHighLatency", "instance": "10.0.0.5:8000", "service": "checkout",
                "severity": "critical"},
        annotations={"description": "checkout p95 above 2s for 5m", "summary": "P95 latency 2.8s"},
        starts_at="2026-11-22T13:50:39.926941266Z", ends_at=None, url="http://prom.example:9090/graph")
    assert (second.fingerprint, second.status, second.title, second.url) == \
        ("9a7930ee6d544b35", "firing", "P95 latency 3.1s", None)


def test_a_partly_resolved_group_keeps_each_alerts_own_status() -> None:
    resolved, firing = parse_alertmanager(fixture("partly-resolved-group.json"))
    assert (resolved.status, resolved.fingerprint, resolved.ends_at) == \
        ("resolved", "3fbf8b0e6f12a856", "2026-11-22T13:49:44Z")
    assert (firing.status, firing.fingerprint, firing.ends_at) == ("firing", "9a7930ee6d544b35", None)
    for signal in (resolved, firing):
        assert (signal.source, signal.service, signal.severity) == ("alertmanager", "checkout", "critical")


@pytest.mark.parametrize(("label", "severity"), [
    *[(w, "critical") for w in ("critical", "page", "p0", "p1", "CRITICAL", " Page ")],
    *[(w, "high") for w in ("error", "high", "major", "Error")],
    *[(w, "medium") for w in ("warning", "warn", "medium", "minor")],
    *[(w, "low") for w in ("info", "low", "none", "unknown", "INFO")],
    ("p3", "medium"), ("", "medium"), (None, "medium"),
])
def test_the_severity_label_maps_onto_four_severities(label: str | None, severity: str) -> None:
    labels = {"alertname": "A"} if label is None else {"alertname": "A", "severity": label}
    [signal] = parse_alertmanager(am_body(am_alert(labels=labels)))
    assert signal.severity == severity


@pytest.mark.parametrize(("labels", "service"), [
    ({"service": "checkout", "job": "node", "app": "web"}, "checkout"),
    ({"job": "node", "app": "web"}, "node"),
    ({"app": "web"}, "web"),
    ({"service": "", "job": "node"}, "node"),
    ({"alertname": "A"}, None),
])
def test_the_service_comes_from_service_then_job_then_app(labels: dict[str, str], service: str | None) -> None:
    [signal] = parse_alertmanager(am_body(am_alert(labels=labels)))
    assert signal.service == service


@pytest.mark.parametrize(("annotations", "labels", "title"), [
    ({"summary": "Probe failure"}, {"alertname": "ProbeFailure"}, "Probe failure"),
    ({"summary": ""}, {"alertname": "ProbeFailure"}, "ProbeFailure"),
    ({"description": "d"}, {"alertname": "ProbeFailure"}, "ProbeFailure"),
    ({}, {"instance": "x"}, "untitled alert"),
])
def test_the_title_is_the_summary_else_the_alertname(annotations: dict[str, str], labels: dict[str, str],
                                                     title: str) -> None:
    [signal] = parse_alertmanager(am_body(am_alert(annotations=annotations, labels=labels)))
    assert signal.title == title


@pytest.mark.parametrize("annotations", [DROP, None, {}])
def test_missing_or_empty_annotations_read_as_none(annotations: Any) -> None:
    [signal] = parse_alertmanager(am_body(am_alert(annotations=annotations)))
    assert signal.annotations == {}


@pytest.mark.parametrize(("generator_url", "url"), [
    ("http://prom.example:9090/graph", "http://prom.example:9090/graph"),
    ("", None), (None, None), (DROP, None), ("javascript:alert(1)", None), ("/graph", None),
])
def test_the_url_is_the_generator_url_when_it_is_an_http_link(generator_url: Any, url: str | None) -> None:
    [signal] = parse_alertmanager(am_body(am_alert(generatorURL=generator_url)))
    assert signal.url == url


@pytest.mark.parametrize("fingerprint", [DROP, None, ""])
def test_a_missing_fingerprint_is_derived_from_the_sorted_labels(fingerprint: Any) -> None:
    one = parse_alertmanager(am_body(am_alert(fingerprint=fingerprint, labels={"a": "1", "b": "2"})))[0]
    same = parse_alertmanager(am_body(am_alert(fingerprint=fingerprint, labels={"b": "2", "a": "1"})))[0]
    other = parse_alertmanager(am_body(am_alert(fingerprint=fingerprint, labels={"a": "1", "b": "3"})))[0]
    assert HEX16.fullmatch(one.fingerprint)
    assert one.fingerprint == same.fingerprint != other.fingerprint


@pytest.mark.parametrize("ends_at", ["0001-01-01T00:00:00Z", "2023-02-06T13:08:45.828Z", "2023-02-06T14:08:45+01:00"])
def test_ends_at_is_none_only_for_the_go_zero_time(ends_at: str) -> None:
    [signal] = parse_alertmanager(am_body(am_alert(endsAt=ends_at)))
    assert signal.ends_at == (None if ends_at.startswith("0001") else ends_at)


def test_extra_keys_from_newer_alertmanagers_are_tolerated() -> None:
    body = am_body(am_alert(extra={"x": [1, 2]}))
    body.update(notification_reason="repeat", routeLabels={"team": "a"}, status="whatever")
    assert len(parse_alertmanager(body)) == 1


def test_an_empty_alert_list_gives_no_signals() -> None:
    assert parse_alertmanager(am_body() | {"alerts": []}) == []


def test_a_thousand_alerts_are_accepted_and_one_more_is_refused() -> None:
    assert len(parse_alertmanager(am_body(*[am_alert()] * 1000))) == 1000
    with pytest.raises(PayloadError) as caught:
        parse_alertmanager(am_body(*[am_alert()] * 1001))
    assert caught.value.field == "alerts"


# Grafana --------------------------------------------------------------------------------------

def test_a_grafana_body_gives_one_signal_per_alert_with_the_panel_link_first() -> None:
    firing, resolved = parse_grafana(GRAFANA_BODY)
    assert firing == AlertSignal(
        source="grafana", fingerprint="57c6d9296de2ad39", status="firing", severity="medium",
        title="CPU above 90% on api-1", service="api", labels=GRAFANA_BODY["alerts"][0]["labels"],
        annotations={"summary": "CPU above 90% on api-1"}, starts_at="2024-05-02T10:15:00+02:00",
        ends_at=None, url="http://grafana.example:3000/d/node1?orgId=1&viewPanel=2")
    assert (resolved.status, resolved.title, resolved.service, resolved.severity, resolved.ends_at, resolved.url) == \
        ("resolved", "HighCPU", "node", "medium", "2024-05-02T10:05:00Z",
         "http://grafana.example:3000/alerting/grafana/cdq8/view?orgId=1")


@pytest.mark.parametrize(("links", "url"), [
    ({"panelURL": "http://g/p", "dashboardURL": "http://g/d", "generatorURL": "http://g/g"}, "http://g/p"),
    ({"panelURL": "", "dashboardURL": "http://g/d", "generatorURL": "http://g/g"}, "http://g/d"),
    ({"panelURL": None, "dashboardURL": "", "generatorURL": "http://g/g"}, "http://g/g"),
    ({"panelURL": "", "dashboardURL": "", "generatorURL": ""}, None),
])
def test_grafana_prefers_the_panel_then_the_dashboard_then_the_generator_link(links: dict[str, Any],
                                                                               url: str | None) -> None:
    body = copy.deepcopy(GRAFANA_BODY)
    body["alerts"][0].update(links)
    assert parse_grafana(body)[0].url == url


@pytest.mark.parametrize(("parse", "body"), [
    (parse_alertmanager, GRAFANA_BODY),
    (parse_grafana, am_body()),
])
def test_each_group_parser_refuses_the_others_version(parse: Callable[[object], object], body: object) -> None:
    with pytest.raises(PayloadError) as caught:
        parse(body)
    assert caught.value.field == "version"


# PagerDuty ------------------------------------------------------------------------------------

def test_a_pagerduty_trigger_gives_a_firing_signal_and_its_routing_key() -> None:
    routing_key, signal = parse_pagerduty(PD_TRIGGER)
    assert routing_key == ROUTING_KEY
    assert signal == AlertSignal(
        source="pagerduty", fingerprint="INC-42", status="firing", severity="critical", title="Disk full on db1",
        service="postgres",
        labels={"source": "db1.prod", "component": "postgres", "group": "prod-datapipe", "class": "disk"},
        annotations={"summary": "Disk full on db1", "free": "0%"}, starts_at="2015-07-17T08:42:58.315+0000",
        url="https://appliance.local/inc/42")


@pytest.mark.parametrize(("body", "status"), [(PD_ACK, "acknowledged"), (PD_RESOLVE, "resolved")])
def test_pagerduty_acknowledge_and_resolve_need_only_the_dedup_key(body: dict[str, Any], status: str) -> None:
    routing_key, signal = parse_pagerduty(body)
    assert routing_key == ROUTING_KEY
    assert (signal.source, signal.fingerprint, signal.status) == ("pagerduty", "INC-42", status)


def test_pagerduty_ignores_a_payload_on_resolve_as_pagerduty_does() -> None:
    _, signal = parse_pagerduty(PD_RESOLVE | {"payload": {"summary": 5}})
    assert signal.status == "resolved"


@pytest.mark.parametrize(("severity", "mapped"), [
    ("critical", "critical"), ("error", "high"), ("warning", "medium"), ("info", "low"),
])
def test_pagerduty_severities_map_onto_ours(severity: str, mapped: str) -> None:
    assert parse_pagerduty(pd_payload(severity=severity))[1].severity == mapped


@pytest.mark.parametrize(("component", "service", "labels"), [
    ("postgres", "postgres", {"source", "component", "group", "class"}),
    (DROP, "db1.prod", {"source", "group", "class"}),
    ("", "db1.prod", {"source", "group", "class"}),
])
def test_pagerduty_service_is_the_component_else_the_source(component: Any, service: str,
                                                            labels: set[str]) -> None:
    _, signal = parse_pagerduty(pd_payload(component=component))
    assert signal.service == service
    assert set(signal.labels) == labels


def test_a_trigger_without_a_dedup_key_gets_a_stable_one_per_routing_key() -> None:
    without = {k: v for k, v in PD_TRIGGER.items() if k != "dedup_key"}
    one = parse_pagerduty(without)[1].fingerprint
    again = parse_pagerduty(copy.deepcopy(without))[1].fingerprint
    other_key = parse_pagerduty(without | {"routing_key": "x" * 32})[1].fingerprint
    assert HEX32.fullmatch(one)
    assert one == again != other_key


@pytest.mark.parametrize(("details", "annotations"), [
    ({"free": "0%"}, {"free": "0%"}),
    ({"n": 3, "r": 0.5, "ok": True, "none": None}, {"n": "3", "r": "0.5", "ok": "true", "none": "null"}),
    ({"disk": {"free": "0%", "mounts": ["/", "/var"]}}, {"disk.free": "0%", "disk.mounts[0]": "/",
                                                         "disk.mounts[1]": "/var"}),
    ({"empty": {}, "list": []}, {"empty": "{}", "list": "[]"}),
    ({"long": "x" * 5000}, {"long": "x" * 1024}),
    ({"summary": "not this one"}, {}),
])
def test_custom_details_become_flat_string_annotations(details: dict[str, Any],
                                                       annotations: dict[str, str]) -> None:
    _, signal = parse_pagerduty(pd_payload(custom_details=details))
    assert signal.annotations == {"summary": "Disk full on db1", **annotations}


@pytest.mark.parametrize("routing_key", ["a", "A" * 64, ROUTING_KEY, "R01-key_x"])
def test_routing_keys_of_one_to_64_safe_characters_are_accepted(routing_key: str) -> None:
    assert parse_pagerduty(pd(routing_key=routing_key))[0] == routing_key


def test_pagerduty_field_limits_are_inclusive() -> None:
    _, signal = parse_pagerduty(pd(dedup_key="k" * 255) | {"payload": PD_TRIGGER["payload"] | {"summary": "s" * 1024}})
    assert (len(signal.fingerprint), len(signal.title)) == (255, 1024)


# Generic events -------------------------------------------------------------------------------

def test_a_full_event_gives_its_signal() -> None:
    assert parse_event(EVENT) == AlertSignal(
        source="events", fingerprint="chk-p95", status="firing", severity="high", title="Checkout p95 above 2s",
        service="checkout", labels={"region": "eu-1"}, annotations={"runbook": "rb/checkout"},
        url="https://grafana.local/d/x")


def test_a_minimal_event_gets_the_defaults() -> None:
    signal = parse_event({"service": "checkout", "title": "down"})
    assert (signal.status, signal.severity, signal.labels, signal.annotations, signal.url) == \
        ("firing", "medium", {}, {}, None)
    assert HEX16.fullmatch(signal.fingerprint)
    assert parse_event({"service": "checkout", "title": "down", "status": "resolved"}).fingerprint == signal.fingerprint
    assert parse_event({"service": "checkout", "title": "up"}).fingerprint != signal.fingerprint


@pytest.mark.parametrize("severity", SEVERITIES)
def test_an_event_takes_any_of_our_severities(severity: str) -> None:
    assert parse_event(event(severity=severity)).severity == severity


def test_event_limits_are_inclusive() -> None:
    labels = {f"k{i}": "v" * 4096 for i in range(64)}
    signal = parse_event(event(title="t" * 512, labels=labels, annotations={"k" * 128: "v"}))
    assert (len(signal.title), len(signal.labels)) == (512, 64)


# Malformed bodies -----------------------------------------------------------------------------

def nested(depth: int) -> object:
    return "leaf" if depth == 0 else {"a": nested(depth - 1)}


MALFORMED: list[tuple[Callable[[object], object], object, str]] = [
    (parse_alertmanager, None, "$"),
    (parse_alertmanager, [], "$"),
    (parse_alertmanager, "x", "$"),
    (parse_alertmanager, 5, "$"),
    (parse_alertmanager, True, "$"),
    (parse_alertmanager, {}, "version"),
    (parse_alertmanager, am_body() | {"version": 4}, "version"),
    (parse_alertmanager, {"version": "4"}, "alerts"),
    (parse_alertmanager, {"version": "4", "alerts": 5}, "alerts"),
    (parse_alertmanager, {"version": "4", "alerts": {"0": am_alert()}}, "alerts"),
    (parse_alertmanager, am_body(am_alert(), None), "alerts[1]"),  # type: ignore[arg-type]
    (parse_alertmanager, am_body(am_alert(status=DROP)), "alerts[0].status"),
    (parse_alertmanager, am_body(am_alert(status="pending")), "alerts[0].status"),
    (parse_alertmanager, am_body(am_alert(status="acknowledged")), "alerts[0].status"),
    (parse_alertmanager, am_body(am_alert(labels=DROP)), "alerts[0].labels"),
    (parse_alertmanager, am_body(am_alert(labels=["alertname"])), "alerts[0].labels"),
    (parse_alertmanager, am_body(am_alert(labels={"port": 8080})), "alerts[0].labels.port"),
    (parse_alertmanager, am_body(am_alert(labels={"up": True})), "alerts[0].labels.up"),
    (parse_alertmanager, am_body(am_alert(labels={"x": None})), "alerts[0].labels.x"),
    (parse_alertmanager, am_body(am_alert(labels={"x": {"y": "z"}})), "alerts[0].labels.x"),
    (parse_alertmanager, am_body(am_alert(labels={"a.b": 1.5})), 'alerts[0].labels["a.b"]'),
    (parse_alertmanager, am_body(am_alert(labels={"x": "v" * 4097})), "alerts[0].labels.x"),
    (parse_alertmanager, am_body(am_alert(labels={"k" * 129: "v"})), "alerts[0].labels"),
    (parse_alertmanager, am_body(am_alert(labels={"": "v"})), "alerts[0].labels"),
    (parse_alertmanager, am_body(am_alert(labels={f"l{i}": "v" for i in range(257)})), "alerts[0].labels"),
    (parse_alertmanager, am_body(am_alert(annotations="x")), "alerts[0].annotations"),
    (parse_alertmanager, am_body(am_alert(annotations={"value": 0.93})), "alerts[0].annotations.value"),
    (parse_alertmanager, am_body(am_alert(startsAt=DROP)), "alerts[0].startsAt"),
    (parse_alertmanager, am_body(am_alert(startsAt="yesterday")), "alerts[0].startsAt"),
    (parse_alertmanager, am_body(am_alert(startsAt=1675688925)), "alerts[0].startsAt"),
    (parse_alertmanager, am_body(am_alert(endsAt="2023-13-01T00:00:00Z")), "alerts[0].endsAt"),
    (parse_alertmanager, am_body(am_alert(endsAt="2" * 5000)), "alerts[0].endsAt"),
    (parse_alertmanager, am_body(am_alert(), am_alert(fingerprint=123)), "alerts[1].fingerprint"),
    (parse_alertmanager, am_body(am_alert(fingerprint="f" * 256)), "alerts[0].fingerprint"),
    (parse_alertmanager, am_body(am_alert(generatorURL=5)), "alerts[0].generatorURL"),
    (parse_alertmanager, am_body(am_alert(generatorURL="http://x/" + "a" * 4096)), "alerts[0].generatorURL"),
    (parse_grafana, am_body(version="4"), "version"),
    (parse_grafana, am_body(am_alert(panelURL=5), version="1"), "alerts[0].panelURL"),
    (parse_grafana, am_body(am_alert(dashboardURL=["http://g/d"]), version="1"), "alerts[0].dashboardURL"),
    (parse_grafana, am_body(am_alert(labels={"value": 44.2}), version="1"), "alerts[0].labels.value"),
    (parse_pagerduty, None, "$"),
    (parse_pagerduty, [PD_TRIGGER], "$"),
    (parse_pagerduty, {}, "routing_key"),
    (parse_pagerduty, pd(routing_key=12345), "routing_key"),
    (parse_pagerduty, pd(routing_key=""), "routing_key"),
    (parse_pagerduty, pd(routing_key="a" * 65), "routing_key"),
    (parse_pagerduty, pd(routing_key="has space"), "routing_key"),
    (parse_pagerduty, pd(event_action=None), "event_action"),
    (parse_pagerduty, pd(event_action="fire"), "event_action"),
    (parse_pagerduty, {"routing_key": ROUTING_KEY, "event_action": "acknowledge"}, "dedup_key"),
    (parse_pagerduty, PD_RESOLVE | {"dedup_key": 42}, "dedup_key"),
    (parse_pagerduty, PD_RESOLVE | {"dedup_key": ""}, "dedup_key"),
    (parse_pagerduty, pd(dedup_key="k" * 256), "dedup_key"),
    (parse_pagerduty, pd(payload=None), "payload"),
    (parse_pagerduty, pd(payload="Disk full"), "payload"),
    (parse_pagerduty, pd_payload(summary=DROP), "payload.summary"),
    (parse_pagerduty, pd_payload(summary=""), "payload.summary"),
    (parse_pagerduty, pd_payload(summary="s" * 1025), "payload.summary"),
    (parse_pagerduty, pd_payload(source=DROP), "payload.source"),
    (parse_pagerduty, pd_payload(severity="high"), "payload.severity"),
    (parse_pagerduty, pd_payload(severity=DROP), "payload.severity"),
    (parse_pagerduty, pd_payload(component=5), "payload.component"),
    (parse_pagerduty, pd_payload(timestamp="last tuesday"), "payload.timestamp"),
    (parse_pagerduty, pd_payload(custom_details="free: 0%"), "payload.custom_details"),
    (parse_pagerduty, pd_payload(custom_details={"": "x"}), "payload.custom_details"),
    (parse_pagerduty, pd_payload(custom_details={"k" * 129: "x"}), "payload.custom_details[\"" + "k" * 40 + "…\"]"),
    (parse_pagerduty, pd_payload(custom_details={f"k{i}": i for i in range(257)}), "payload.custom_details"),
    (parse_pagerduty, pd_payload(custom_details=nested(12)), "payload.custom_details" + ".a" * 9),
    (parse_pagerduty, pd(client_url=5), "client_url"),
    (parse_event, None, "$"),
    (parse_event, "checkout down", "$"),
    (parse_event, {}, "service"),
    (parse_event, event(service=5), "service"),
    (parse_event, event(service=""), "service"),
    (parse_event, event(service="s" * 129), "service"),
    (parse_event, event(title=DROP), "title"),
    (parse_event, event(title="t" * 513), "title"),
    (parse_event, event(status="acknowledged"), "status"),
    (parse_event, event(severity="warning"), "severity"),
    (parse_event, event(severity=True), "severity"),
    (parse_event, event(fingerprint=7), "fingerprint"),
    (parse_event, event(labels={"a": 1}), "labels.a"),
    (parse_event, event(labels={f"k{i}": "v" for i in range(65)}), "labels"),
    (parse_event, event(annotations=["runbook"]), "annotations"),
    (parse_event, event(url="javascript:alert(1)"), "url"),
    (parse_event, event(url=3), "url"),
    (parse_event, event(extra="x"), "extra"),
    (parse_event, event(**{"odd key": 1}), '["odd key"]'),
]


@pytest.mark.parametrize(("parse", "body", "field"), MALFORMED,
                         ids=[f"{p.__name__}-{i}" for i, (p, _, _) in enumerate(MALFORMED)])
def test_a_malformed_body_is_refused_naming_the_json_path(parse: Callable[[object], object], body: object,
                                                          field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse(body)
    assert isinstance(caught.value, FieldError)
    assert caught.value.field == field
    assert caught.value.message
    assert str(caught.value).startswith(field)


# A deterministic sweep: every key of every valid body removed or replaced by each junk value, fed
# to every parser. Each either parses or raises PayloadError naming a field, never anything else.
JUNK: list[object] = [None, True, False, 0, -1, 1.5, float("nan"), "", "x" * 5000, [], [1, "a"], {}, {"a": 1},
                      {"": None}, nested(20)]
PARSERS = (parse_alertmanager, parse_grafana, parse_pagerduty, parse_event)
VALID = {"alertmanager": fixture("partly-resolved-group.json"), "grafana": GRAFANA_BODY, "pd-trigger": PD_TRIGGER,
         "pd-ack": PD_ACK, "event": EVENT}


def mutations(value: object) -> Iterator[object]:
    """Copies of ``value`` with one key or item removed or replaced by junk, at every depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield {k: v for k, v in value.items() if k != key}
            for junk in JUNK:
                yield {**value, key: junk}
            for changed in mutations(item):
                yield {**value, key: changed}
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield value[:i] + value[i + 1:]
            for changed in mutations(item):
                yield value[:i] + [changed] + value[i + 1:]


@pytest.mark.parametrize("name", sorted(VALID))
def test_mutated_bodies_parse_or_raise_only_payload_error(name: str) -> None:
    count = 0
    for body in [*mutations(VALID[name]), *JUNK]:
        for parse in PARSERS:
            count += 1
            try:
                parse(body)
            except PayloadError as error:
                assert error.field and error.message
    assert count > 200
