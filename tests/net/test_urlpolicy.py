"""The outbound URL policy: schemes, credentials, metadata and private addresses, CIDR lists, resolution."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from alertengine.errors import AlertEngineError
from alertengine.net.urlpolicy import UrlPolicy, UrlPolicyError, check_url

DEFAULT = UrlPolicy()
NO_LOOPBACK = UrlPolicy(allow_loopback=False)
NO_PRIVATE = UrlPolicy(allow_private=False)
DENY_TEN = UrlPolicy(deny_cidrs=("10.0.0.0/8",))
ALLOW_192 = UrlPolicy(allow_cidrs=("192.168.0.0/16",))
ALLOW_METADATA = UrlPolicy(allow_cidrs=("169.254.169.254/32",))


@pytest.mark.parametrize(("url", "policy", "expected"), [
    ("https://example.com/health/alerts", DEFAULT, "https://example.com/health/alerts"),
    ("https://93.184.216.34/", DEFAULT, "https://93.184.216.34/"),
    ("HTTPS://Example.COM:8443/a?b=c#d", DEFAULT, "https://example.com:8443/a?b=c#d"),
    ("http://127.0.0.1:8080/health", DEFAULT, "http://127.0.0.1:8080/health"),
    ("http://localhost/", DEFAULT, "http://localhost/"),
    ("http://[::1]:9000/", DEFAULT, "http://[::1]:9000/"),
    ("http://10.1.2.3/", DEFAULT, "http://10.1.2.3/"),
    ("http://192.168.1.5/", DEFAULT, "http://192.168.1.5/"),
    ("http://192.168.3.3/", ALLOW_192, "http://192.168.3.3/"),
    ("http://169.254.169.254/latest/meta-data/", ALLOW_METADATA, "http://169.254.169.254/latest/meta-data/"),
    ("http://0x7f.0.0.1/", DEFAULT, "http://127.0.0.1/"),
    ("http://[::ffff:93.184.216.34]/", DEFAULT, "http://[::ffff:5db8:d822]/"),
    ("http://example.com./", DEFAULT, "http://example.com/"),
])
def test_acceptable_urls_are_returned_normalised(url: str, policy: UrlPolicy, expected: str) -> None:
    assert check_url(url, policy) == expected


@pytest.mark.parametrize(("url", "policy", "reason"), [
    ("http://169.254.169.254/latest/meta-data/", DEFAULT, "metadata"),
    ("http://[fd00:ec2::254]/", DEFAULT, "metadata"),
    ("http://100.100.100.200/", DEFAULT, "metadata"),
    ("http://[::ffff:169.254.169.254]/", DEFAULT, "metadata"),
    ("http://2852039166/", DEFAULT, "metadata"),
    ("http://0xa9.0xfe.0xa9.0xfe/", DEFAULT, "metadata"),
    ("http://0251.0376.0251.0376/", DEFAULT, "metadata"),
    ("http://metadata.google.internal/", DEFAULT, "metadata"),
    ("http://METADATA.google.internal./computeMetadata/v1/", DEFAULT, "metadata"),
    ("http://metadata/", DEFAULT, "metadata"),
    ("http://[fe80::1]/", DEFAULT, "link-local"),
    ("http://169.254.1.1/", DEFAULT, "link-local"),
    ("file:///etc/passwd", DEFAULT, "http"),
    ("gopher://x/", DEFAULT, "http"),
    ("ftp://x/", DEFAULT, "http"),
    ("javascript:alert(1)", DEFAULT, "http"),
    ("data:text/plain,hi", DEFAULT, "http"),
    ("example.com/health", DEFAULT, "http"),
    ("http:///path", DEFAULT, "no valid host"),
    ("http://127.0.0.1:8080/health", NO_LOOPBACK, "loopback"),
    ("http://localhost/", NO_LOOPBACK, "loopback"),
    ("http://api.localhost/", NO_LOOPBACK, "loopback"),
    ("http://2130706433/", NO_LOOPBACK, "loopback"),
    ("http://0177.0.0.1/", NO_LOOPBACK, "loopback"),
    ("http://[::1]/", NO_LOOPBACK, "loopback"),
    ("http://[::ffff:127.0.0.1]/", NO_LOOPBACK, "loopback"),
    ("http://[::169.254.169.254]/", DEFAULT, "reserved"),
    ("http://10.1.2.3/", NO_PRIVATE, "private"),
    ("http://192.168.1.5/", NO_PRIVATE, "private"),
    ("http://100.64.0.1/", NO_PRIVATE, "private"),
    ("http://[fc00::1]/", NO_PRIVATE, "private"),
    ("http://10.9.9.9/", DENY_TEN, "denied"),
    ("http://[::ffff:10.9.9.9]/", DENY_TEN, "denied"),
    ("http://10.1.1.1/", ALLOW_192, "not in the allowed"),
    ("http://0.0.0.0/", DEFAULT, "unspecified"),
    ("http://[::]/", DEFAULT, "unspecified"),
    ("http://224.0.0.1/", DEFAULT, "multicast"),
    ("http://255.255.255.255/", DEFAULT, "reserved"),
    ("http://example.com:0/", DEFAULT, "port"),
    ("http://example.com:99999/", DEFAULT, "port"),
    ("http://example.com:8o/", DEFAULT, "port"),
    ("http://" + "a" * 2990 + ".com/", DEFAULT, "longer than 2048"),
    ("http://exa mple.com/", DEFAULT, "whitespace"),
    ("http://example.com/\nX-Injected: 1", DEFAULT, "whitespace"),
    ("http://1.2.3.999/", DEFAULT, "IPv4"),
    ("http://%31%32%37.0.0.1/", DEFAULT, "valid"),
    ("http://exa%6dple.com/", DEFAULT, "host name"),
    ("http://evil.com\\@169.254.169.254/", DEFAULT, "user name"),
    ("http://169.254.169.254\\.evil.com/", DEFAULT, "host name"),
    ("http://::1/", DEFAULT, "brackets"),
    ("http://[::1]x/", DEFAULT, "valid host"),
    ("", DEFAULT, "required"),
])
def test_refused_urls_raise_with_a_reason(url: str, policy: UrlPolicy, reason: str) -> None:
    with pytest.raises(UrlPolicyError) as caught:
        check_url(url, policy, "webhook_url")
    assert caught.value.field == "webhook_url"
    assert reason in caught.value.message
    assert isinstance(caught.value, AlertEngineError)


@pytest.mark.parametrize("url", [
    "http://user:pw@example.com/",
    "https://admin:pw@169.254.169.254/",
    "ftp://user:pw@example.com/",
])
def test_credentials_in_the_url_are_refused_and_never_repeated(url: str) -> None:
    with pytest.raises(UrlPolicyError) as caught:
        check_url(url, DEFAULT)
    assert "pw" not in caught.value.message
    assert "pw" not in str(caught.value)


def fake_getaddrinfo(table: dict[str, list[str]]) -> Any:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[host]]
    return getaddrinfo


@pytest.mark.parametrize(("host", "addresses", "reason"), [
    ("evil.example", ["169.254.169.254"], "metadata"),
    ("evil6.example", ["fe80::1%eth0"], "link-local"),
    ("mixed.example", ["93.184.216.34", "127.0.0.1"], "loopback"),
    ("missing.example", None, "does not resolve"),
])
def test_resolving_applies_the_address_rules_to_every_address(
        monkeypatch: pytest.MonkeyPatch, host: str, addresses: list[str] | None, reason: str) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo({host: addresses} if addresses else {}))
    assert check_url(f"http://{host}/", NO_LOOPBACK) == f"http://{host}/"  # names are not resolved by default
    with pytest.raises(UrlPolicyError) as caught:
        check_url(f"http://{host}/", NO_LOOPBACK, resolve=True)
    assert reason in caught.value.message


def test_resolving_accepts_a_name_with_only_public_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo({"good.example": ["93.184.216.34"]}))
    assert check_url("https://good.example/hook", DEFAULT, resolve=True) == "https://good.example/hook"


@pytest.mark.parametrize(("allow", "deny", "allow_cidrs", "deny_cidrs"), [
    ("10.0.0.0/8, 192.168.0.0/16", "", ("10.0.0.0/8", "192.168.0.0/16"), ()),
    ("", " 172.16.0.0/12 ,fc00::/7,", (), ("172.16.0.0/12", "fc00::/7")),
    ("", "", (), ()),
])
def test_policies_parse_from_comma_separated_cidr_lists(
        allow: str, deny: str, allow_cidrs: tuple[str, ...], deny_cidrs: tuple[str, ...]) -> None:
    policy = UrlPolicy.from_strings(allow, deny)
    assert policy == UrlPolicy(allow_cidrs=allow_cidrs, deny_cidrs=deny_cidrs)


@pytest.mark.parametrize(("allow", "deny", "bad"), [
    ("10.0.0.0/8, 10.0.0.0/33", "", "10.0.0.0/33"),
    ("", "not-a-cidr", "not-a-cidr"),
])
def test_a_bad_cidr_raises_value_error_naming_it(allow: str, deny: str, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        UrlPolicy.from_strings(allow, deny)
