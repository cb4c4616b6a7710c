"""The outbound URL policy as one table: URL x policy -> the normalised URL, or the exact refusal.

Complements tests/net/test_urlpolicy.py (no case of it is repeated) with the classes it lacks:
every IPv4 spelling resolvers accept, IPv6 forms that embed an IPv4 address (mapped, compatible,
6to4, NAT64, Teredo), the other cloud metadata endpoints, allow/deny CIDR interplay, ports, userinfo,
schemes, host-name syntax (trailing dots, case, IDNA, lengths) and resolution details.

Expected outcomes are what a secure policy should answer. Where the product answers otherwise the
row (``gap``) names the gap it closed; those rows only demand *a* refusal, whatever its wording.
Every other refusal is checked word for word (the message is what the API shows, and the field
names the input that was refused).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from typing import Any

import pytest

from alertengine.errors import FieldError
from alertengine.net.urlpolicy import (
    MAX_URL_LENGTH,
    UrlPolicy,
    UrlPolicyError,
    address_refusal,
    check_url,
    embedded_ipv4,
)

DEFAULT = UrlPolicy()
CLOSED = UrlPolicy(allow_private=False, allow_loopback=False)  # an appliance that may only reach the internet
ALLOW_10 = UrlPolicy(allow_cidrs=("10.0.0.0/8",))
ALLOW_10_DENY_10_1 = UrlPolicy(allow_cidrs=("10.0.0.0/8",), deny_cidrs=("10.1.0.0/16",))
ALLOW_ALL_V4 = UrlPolicy(allow_cidrs=("0.0.0.0/0",))
ALLOW_LOOPBACK_ONLY = UrlPolicy(allow_cidrs=("127.0.0.0/8",), allow_loopback=False)
ALLOW_V6_DOC = UrlPolicy(allow_cidrs=("2001:db8::/32",))
DENY_ALL_V4 = UrlPolicy(deny_cidrs=("0.0.0.0/0",))
DENY_V6_DOC = UrlPolicy(deny_cidrs=("2001:db8::/32",))
DENY_192 = UrlPolicy(deny_cidrs=("192.168.0.0/16",))
DENY_TEN = UrlPolicy(deny_cidrs=("10.0.0.0/8",))
DENY_MAPPED_10 = UrlPolicy(deny_cidrs=("::ffff:10.0.0.0/104",))
DENY_LINK_LOCAL = UrlPolicy(deny_cidrs=("169.254.0.0/16",))
ALLOW_HOST_BITS = UrlPolicy(allow_cidrs=("10.0.0.1/8",))  # host bits set: read as 10.0.0.0/8

# the product's messages, word for word
HOST = "the URL does not have a valid host name"
IPV4 = "the URL's host is not a valid IPv4 address"
PORT = "the URL's port must be a number from 1 to 65535"
SCHEME = "the URL must start with http:// or https://"
USERINFO = "the URL must not contain a user name or password; put credentials in the channel's secrets instead"
NETLOC = "the URL has no valid host (IPv6 addresses go in brackets: http://[::1]/)"
UNPARSABLE = "the URL cannot be parsed"
SPACE = "the URL contains whitespace or control characters"
REQUIRED = "a URL is required"
TOO_LONG = f"the URL is longer than {MAX_URL_LENGTH} characters"
METADATA = "is a cloud metadata address"
LINK_LOCAL = "is a link-local address"
LOOPBACK = "is a loopback address, which this appliance does not allow"
PRIVATE = "is a private address, which this appliance does not allow"
RESERVED = "is a reserved address"
UNSPECIFIED = "is the unspecified address"
MULTICAST = "is a multicast address"
DENIED = "is in a denied address range"
NOT_ALLOWED = "is not in the allowed address ranges"


def host(subject: str, reason: str) -> str:
    return f"the URL's host {subject} {reason}"


def metadata_name(name: str) -> str:
    return f"the URL's host {name} is a cloud metadata service"


def ok(url: str, policy: UrlPolicy, normalised: str | None = None, id: str | None = None) -> Any:
    return pytest.param(url, policy, ("ok", url if normalised is None else normalised), id=id)


def no(url: str, policy: UrlPolicy, message: str, id: str | None = None) -> Any:
    return pytest.param(url, policy, ("refused", message), id=id)


def gap(url: str, policy: UrlPolicy, reason: str, message: str, id: str | None = None) -> Any:
    """A URL a secure policy refuses that the product once accepted (``reason`` says why it must be
    refused; each was a bug found by this table and fixed), with the refusal the fix gives."""
    return pytest.param(url, policy, ("refused", message), id=id)


EMBEDS = "embeds {inner}, which {reason}"
THIS_NET = "is in 'this network' (0.0.0.0/8)"
SPECIAL = ("is a cloud metadata or link-local address; only an allow entry within 169.254.0.0/16 or fe80::/10 "
           "opens it")


SIXTO4 = ("was a product bug: 6to4 addresses (2002::/16) embed an IPv4 address and are not unwrapped, so "
          "2002:a9fe:a9fe:: (169.254.169.254) and 2002:7f00:1:: (127.0.0.1) pass every rule")
TEREDO = ("was a product bug: Teredo addresses (2001:0::/32) embed the client IPv4 address (inverted) and are not "
          "unwrapped; this one's client is 169.254.169.254")
ORACLE = "was a product bug: 192.0.0.192 is Oracle Cloud's (legacy) instance metadata address and is not refused"
AZURE = "was a product bug: 168.63.129.16 is Azure's WireServer (platform metadata/agent endpoint) and is not refused"
SITE_LOCAL = ("was a product bug: fec0::/10 (deprecated site-local) is not global, yet a policy that refuses private "
              "addresses lets it through")
THIS_NETWORK = ("was a product bug: 0.0.0.0/8 is 'this network' (RFC 1122), never a destination (Linux connects "
                "0.x addresses locally); only 0.0.0.0 itself is refused")
DENY_MAPPED = ("was a product bug: a deny entry written as IPv4-mapped IPv6 (::ffff:10.0.0.0/104) does not deny the "
               "same addresses written as IPv4, although the reverse (IPv4 entry, mapped URL) is denied")
DENY_6TO4 = "was a product bug: a denied IPv4 range is reachable through its 6to4 form (2002:a9fe:a9fe::)"
BROAD_ALLOW = ("was a product bug (design question): any allow entry, even 0.0.0.0/0, lifts the metadata and "
               "link-local rules; only an entry naming the metadata address should")

LONGEST_HOST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters
assert len(LONGEST_HOST) == 253

TABLE = [
    # --- schemes ---------------------------------------------------------------------------------
    ok("hTTp://example.com/", DEFAULT, "http://example.com/"),
    ok("HTTPS://example.com", DEFAULT, "https://example.com"),
    no("ws://example.com/", DEFAULT, SCHEME),
    no("wss://example.com/", DEFAULT, SCHEME),
    no("dict://127.0.0.1:11211/stat", DEFAULT, SCHEME),
    no("ldap://169.254.169.254/", DEFAULT, SCHEME),
    no("http+unix://%2Fvar%2Frun%2Fdocker.sock/", DEFAULT, SCHEME),
    no("httpx://example.com/", DEFAULT, SCHEME),
    no("//example.com/", DEFAULT, SCHEME),
    no("http:example.com", DEFAULT, NETLOC),
    no("https:/example.com", DEFAULT, NETLOC),
    no("http://", DEFAULT, NETLOC),
    # --- ports -----------------------------------------------------------------------------------
    ok("http://example.com:1/", DEFAULT),
    ok("https://example.com:65535/", DEFAULT),
    ok("https://example.com:00443/", DEFAULT, "https://example.com:443/"),
    ok("http://example.com:/x", DEFAULT, "http://example.com/x"),
    ok("http://[::1]:8443/", DEFAULT),
    no("http://example.com:65536/", DEFAULT, PORT),
    no("http://example.com:123456/", DEFAULT, PORT),
    no("http://example.com:000443/", DEFAULT, PORT),
    no("http://example.com:+80/", DEFAULT, PORT),
    no("http://example.com:-1/", DEFAULT, PORT),
    no("http://example.com:0x50/", DEFAULT, PORT),
    no("http://example.com:https/", DEFAULT, PORT),
    no("http://example.com:80:80/", DEFAULT, PORT),
    no("http://[::1]:80:80/", DEFAULT, PORT),
    no("http://example.com:\uff18\uff10/", DEFAULT, PORT, id="fullwidth-port"),
    # --- userinfo --------------------------------------------------------------------------------
    no("http://@example.com/", DEFAULT, USERINFO),
    no("http://user@example.com/", DEFAULT, USERINFO),
    no("http://:@example.com/", DEFAULT, USERINFO),
    no("http://user%40corp@example.com/", DEFAULT, USERINFO),
    no("https://example.com@169.254.169.254/", DEFAULT, USERINFO),
    no("https://169.254.169.254@example.com/", DEFAULT, USERINFO),
    no("http://example.com%40evil.com/", DEFAULT, HOST),
    ok("http://example.com/@evil.com", DEFAULT),
    ok("http://example.com?next=@evil.com", DEFAULT),
    ok("http://example.com#@evil.com", DEFAULT),
    # --- IPv4 in every spelling (loopback, with loopback refused) ---------------------------------
    no("http://127.1/", CLOSED, host("127.0.0.1", LOOPBACK)),
    no("http://127.0.1/", CLOSED, host("127.0.0.1", LOOPBACK)),
    no("http://0x7f000001/", CLOSED, host("127.0.0.1", LOOPBACK)),
    no("http://0X7F000001/", CLOSED, host("127.0.0.1", LOOPBACK)),
    no("http://017700000001/", CLOSED, host("127.0.0.1", LOOPBACK)),
    no("http://0x7F.1/", CLOSED, host("127.0.0.1", LOOPBACK)),
    no("http://0177.0.0.01/", CLOSED, host("127.0.0.1", LOOPBACK)),
    no("http://0x7f.0x0.0x0.0x1/", CLOSED, host("127.0.0.1", LOOPBACK)),
    no("http://00000000000000000177.0.0.1/", CLOSED, host("127.0.0.1", LOOPBACK)),
    no("http://127.0.0.1./", CLOSED, host("127.0.0.1", LOOPBACK)),
    no("http://127.255.255.254/", CLOSED, host("127.255.255.254", LOOPBACK)),
    ok("http://127.1/", DEFAULT, "http://127.0.0.1/"),
    ok("http://0x7f000001:8080/x", DEFAULT, "http://127.0.0.1:8080/x"),
    # --- IPv4 in every spelling (the metadata address) ---------------------------------------------
    no("http://0xa9fea9fe/", DEFAULT, host("169.254.169.254", METADATA)),
    no("http://0XA9FEA9FE/", DEFAULT, host("169.254.169.254", METADATA)),
    no("http://025177524776/", DEFAULT, host("169.254.169.254", METADATA)),
    no("http://169.254.43518/", DEFAULT, host("169.254.169.254", METADATA)),
    no("http://169.16689662/", DEFAULT, host("169.254.169.254", METADATA)),
    no("http://0251.0xfe.43518/", DEFAULT, host("169.254.169.254", METADATA)),
    no("http://169.254.169.254./", DEFAULT, host("169.254.169.254", METADATA)),
    no("http://1684301000/", DEFAULT, host("100.100.100.200", METADATA)),
    no("http://100.100.100.200:8080/latest/meta-data", DEFAULT, host("100.100.100.200", METADATA)),
    # --- IPv4: not an address ---------------------------------------------------------------------
    no("http://1.2.3.4.5/", DEFAULT, IPV4),
    no("http://256.0.0.1/", DEFAULT, IPV4),
    no("http://4294967296/", DEFAULT, IPV4),
    no("http://0x100000000/", DEFAULT, IPV4),
    no("http://08.0.0.1/", DEFAULT, IPV4),
    no("http://0x/", DEFAULT, IPV4),
    no("http://a.b.c.1/", DEFAULT, IPV4),
    no("http://example.123/", DEFAULT, IPV4),
    no("http://127%2e0.0.1/", DEFAULT, IPV4),
    ok("http://1.example.com/", DEFAULT),
    ok("http://1e2/", DEFAULT),
    ok("http://0xg/", DEFAULT),
    # --- IPv4: special ranges ---------------------------------------------------------------------
    no("http://4294967295/", DEFAULT, host("255.255.255.255", RESERVED)),
    no("http://240.0.0.1/", DEFAULT, host("240.0.0.1", RESERVED)),
    no("http://0/", DEFAULT, host("0.0.0.0", UNSPECIFIED)),
    no("http://239.255.255.250/", DEFAULT, host("239.255.255.250", MULTICAST)),
    no("http://172.31.255.255/", CLOSED, host("172.31.255.255", PRIVATE)),
    no("http://100.127.255.255/", CLOSED, host("100.127.255.255", PRIVATE)),
    no("http://198.18.0.1/", CLOSED, host("198.18.0.1", PRIVATE)),
    no("http://192.0.2.1/", CLOSED, host("192.0.2.1", PRIVATE)),
    ok("http://172.32.0.1/", CLOSED),
    ok("http://100.128.0.1/", CLOSED),
    ok("http://100.63.255.255/", CLOSED),
    ok("http://100.64.0.1/", DEFAULT),
    gap("http://0.1.2.3/", DEFAULT, THIS_NETWORK, host("0.1.2.3", THIS_NET)),
    no("http://0.255.255.255/", CLOSED, host("0.255.255.255", THIS_NET)),
    ok("http://1.0.0.1/", CLOSED),
    # --- the other cloud metadata endpoints -------------------------------------------------------
    no("http://[FD00:EC2:0::254]/", DEFAULT, host("fd00:ec2::254", METADATA)),
    no("http://[fd00:ec2::254]/", CLOSED, host("fd00:ec2::254", METADATA)),
    no("http://169.254.170.2/v2/credentials", DEFAULT, host("169.254.170.2", LINK_LOCAL)),
    no("http://169.254.169.123/", DEFAULT, host("169.254.169.123", LINK_LOCAL)),
    ok("http://100.100.100.201/", DEFAULT),
    gap("http://192.0.0.192/", DEFAULT, ORACLE, host("192.0.0.192", METADATA)),
    gap("http://192.0.0.192/", CLOSED, ORACLE, host("192.0.0.192", METADATA)),
    gap("http://168.63.129.16/", DEFAULT, AZURE, host("168.63.129.16", METADATA)),
    no("http://metadata.goog/", DEFAULT, metadata_name("metadata.goog")),
    no("http://Metadata.Google.Internal/", DEFAULT, metadata_name("metadata.google.internal")),
    no("http://instance-data/latest/", DEFAULT, metadata_name("instance-data")),
    no("http://INSTANCE-DATA.ec2.internal./", DEFAULT, metadata_name("instance-data.ec2.internal")),
    no("http://\u24dcetadata/", DEFAULT, metadata_name("metadata"), id="circled-m-metadata"),
    ok("http://metadata.google.internal.example.com/", DEFAULT),
    ok("http://metadata.azure.com.example/", DEFAULT),
    # --- IPv6 ------------------------------------------------------------------------------------
    no("http://[0:0:0:0:0:0:0:1]/", CLOSED, host("::1", LOOPBACK)),
    no("http://[::ffff:7f00:1]/", CLOSED, host("::ffff:7f00:1", LOOPBACK)),
    ok("http://[0:0:0:0:0:0:0:1]:9/", DEFAULT, "http://[::1]:9/"),
    no("http://[FE80::A9FE:A9FE]/", DEFAULT, host("fe80::a9fe:a9fe", LINK_LOCAL)),
    no("http://[febf:ffff::1]/", DEFAULT, host("febf:ffff::1", LINK_LOCAL)),
    no("http://[fe80::1%25eth0]/", DEFAULT, HOST),
    no("http://[2606:2800:220:1::1%25eth0]/", DEFAULT, HOST),
    ok("http://[fd12:3456::1]/", DEFAULT),
    no("http://[fd12:3456::1]/", CLOSED, host("fd12:3456::1", PRIVATE)),
    no("http://[ff02::1]/", DEFAULT, host("ff02::1", MULTICAST)),
    no("http://[::ffff:a9fe:a9fe]/", DEFAULT, host("::ffff:a9fe:a9fe", METADATA)),
    no("http://[0:0:0:0:0:ffff:169.254.169.254]/", CLOSED, host("::ffff:a9fe:a9fe", METADATA)),
    no("http://[::ffff:100.100.100.200]/", DEFAULT, host("::ffff:6464:64c8", METADATA)),
    no("http://[::ffff:169.254.1.1]/", DEFAULT, host("::ffff:a9fe:101", LINK_LOCAL)),
    no("http://[::ffff:0.0.0.0]/", DEFAULT, host("::ffff:0:0", UNSPECIFIED)),
    no("http://[::ffff:224.0.0.1]/", DEFAULT, host("::ffff:e000:1", MULTICAST)),
    no("http://[::ffff:255.255.255.255]/", DEFAULT, host("::ffff:ffff:ffff", RESERVED)),
    no("http://[::ffff:10.0.0.1]/", CLOSED, host("::ffff:a00:1", PRIVATE)),
    no("http://[::127.0.0.1]/", DEFAULT, host("::7f00:1", RESERVED)),            # IPv4-compatible
    no("http://[::ffff:0:a9fe:a9fe]/", DEFAULT, host("::ffff:0:a9fe:a9fe", RESERVED)),  # SIIT-translated
    no("http://[64:ff9b::169.254.169.254]/", DEFAULT, host("64:ff9b::a9fe:a9fe", RESERVED)),  # NAT64
    no("http://[64:ff9b::7f00:1]/", CLOSED, host("64:ff9b::7f00:1", RESERVED)),
    no("http://[64:ff9b:1::a9fe:a9fe]/", DEFAULT, host("64:ff9b:1::a9fe:a9fe", RESERVED)),  # local-use NAT64
    gap("http://[2002:a9fe:a9fe::1]/", DEFAULT, SIXTO4,
        host("2002:a9fe:a9fe::1", EMBEDS.format(inner="169.254.169.254", reason=METADATA))),
    gap("http://[2002:7f00:1::1]/", CLOSED, SIXTO4, host("2002:7f00:1::1", EMBEDS.format(inner="127.0.0.1", reason=LOOPBACK))),
    ok("http://[2002:7f00:1::1]/", DEFAULT),
    ok("http://[2002:5db8:d822::1]/", CLOSED),
    gap("http://[2001:0:4136:e378:8000:63bf:5601:5601]/", DEFAULT, TEREDO, host(
        "2001:0:4136:e378:8000:63bf:5601:5601", EMBEDS.format(inner="169.254.169.254", reason=METADATA))),
    no("http://[2001:0:a00:1::a247:27dd]/", DENY_TEN,  # Teredo server 10.0.0.1
       host("2001:0:a00:1::a247:27dd", EMBEDS.format(inner="10.0.0.1", reason=DENIED))),
    ok("http://[2001:0:a00:1::a247:27dd]/", DEFAULT),  # server 10.0.0.1, client 93.184.216.34
    no("http://[2001:0:5db8:d822::f5ff:fffe]/", DENY_TEN,  # Teredo client 10.0.0.1
       host("2001:0:5db8:d822::f5ff:fffe", EMBEDS.format(inner="10.0.0.1", reason=DENIED))),
    gap("http://[fec0::1]/", CLOSED, SITE_LOCAL, host("fec0::1", PRIVATE)),
    ok("http://[fec0::1]/", DEFAULT),
    no("http://[feff::1]/", CLOSED, host("feff::1", PRIVATE)),
    ok("http://[2606:2800:0220:0001:0248:1893:25c8:1946]/", CLOSED, "http://[2606:2800:220:1:248:1893:25c8:1946]/"),
    ok("http://[2606:2800:220:1::]/", DEFAULT),
    no("http://[::1/", DEFAULT, UNPARSABLE),
    no("http://[]/", DEFAULT, UNPARSABLE),
    no("http://[127.0.0.1]/", DEFAULT, UNPARSABLE),
    no("http://[v1.fe80::a+en1]/", DEFAULT, HOST),
    no("http://[::1]]/", DEFAULT, NETLOC),
    # --- allow and deny CIDR lists ----------------------------------------------------------------
    ok("http://10.1.2.3/", ALLOW_10),
    ok("http://[::ffff:10.0.0.1]/", ALLOW_10, "http://[::ffff:a00:1]/"),
    no("http://localhost/", ALLOW_10, host("localhost (127.0.0.1)", NOT_ALLOWED)),
    no("http://11.0.0.1/", ALLOW_10, host("11.0.0.1", NOT_ALLOWED)),
    no("http://[2001:db8::1]/", ALLOW_10, host("2001:db8::1", NOT_ALLOWED)),
    no("http://169.254.169.254/", ALLOW_10, host("169.254.169.254", NOT_ALLOWED)),
    no("http://10.1.1.1/", ALLOW_10_DENY_10_1, host("10.1.1.1", DENIED)),
    no("http://[::ffff:10.1.1.1]/", ALLOW_10_DENY_10_1, host("::ffff:a01:101", DENIED)),
    ok("http://10.2.1.1/", ALLOW_10_DENY_10_1),
    ok("http://10.9.9.9/", ALLOW_HOST_BITS),
    no("http://11.9.9.9/", ALLOW_HOST_BITS, host("11.9.9.9", NOT_ALLOWED)),
    ok("http://127.0.0.1:8080/", ALLOW_LOOPBACK_ONLY),
    no("http://[::1]/", ALLOW_LOOPBACK_ONLY, host("::1", NOT_ALLOWED)),
    no("http://0.0.0.0/", ALLOW_ALL_V4, host("0.0.0.0", UNSPECIFIED)),
    no("http://224.0.0.1/", ALLOW_ALL_V4, host("224.0.0.1", MULTICAST)),
    no("http://255.255.255.255/", ALLOW_ALL_V4, host("255.255.255.255", RESERVED)),
    no("http://[2606:2800:220:1::]/", ALLOW_ALL_V4, host("2606:2800:220:1::", NOT_ALLOWED)),
    gap("http://169.254.169.254/", ALLOW_ALL_V4, BROAD_ALLOW, host("169.254.169.254", SPECIAL)),
    no("http://169.254.1.1/", ALLOW_ALL_V4, host("169.254.1.1", SPECIAL)),
    ok("http://169.254.169.254/", UrlPolicy(allow_cidrs=("169.254.0.0/16",))),
    ok("http://169.254.1.1/", UrlPolicy(allow_cidrs=("169.254.1.0/24",))),
    ok("http://[::ffff:169.254.169.254]/", UrlPolicy(allow_cidrs=("169.254.169.254/32",)), "http://[::ffff:a9fe:a9fe]/"),
    ok("http://[fe80::1]/", UrlPolicy(allow_cidrs=("fe80::/10",))),
    no("http://[fe80::1]/", UrlPolicy(allow_cidrs=("::/0",)), host("fe80::1", SPECIAL)),
    no("http://[fe80::1]/", UrlPolicy(allow_cidrs=("fe80::/9",)), host("fe80::1", SPECIAL)),
    no("http://100.100.100.200/", UrlPolicy(allow_cidrs=("100.100.100.200/32",)), host("100.100.100.200", SPECIAL)),
    no("http://[fd00:ec2::254]/", UrlPolicy(allow_cidrs=("fd00::/8",)), host("fd00:ec2::254", SPECIAL)),
    ok("http://[fd00:ec2::253]/", UrlPolicy(allow_cidrs=("fd00::/8",))),
    ok("http://100.100.100.201/", UrlPolicy(allow_cidrs=("100.100.100.200/31",))),
    no("http://[2002:a00:1::1]/", UrlPolicy(allow_cidrs=("2002::/16",)),
       host("2002:a00:1::1", EMBEDS.format(inner="10.0.0.1", reason=NOT_ALLOWED))),
    ok("http://[2002:a00:1::1]/", UrlPolicy(allow_cidrs=("2002::/16", "10.0.0.0/8"))),
    ok("http://[2001:db8::1]/", ALLOW_V6_DOC),
    no("http://93.184.216.34/", ALLOW_V6_DOC, host("93.184.216.34", NOT_ALLOWED)),
    no("http://93.184.216.34/", DENY_ALL_V4, host("93.184.216.34", DENIED)),
    no("http://[::ffff:93.184.216.34]/", DENY_ALL_V4, host("::ffff:5db8:d822", DENIED)),
    ok("http://[2606:2800:220:1::]/", DENY_ALL_V4),
    no("http://[2001:db8::1]/", DENY_V6_DOC, host("2001:db8::1", DENIED)),
    ok("http://93.184.216.34/", DENY_V6_DOC),
    no("http://192.168.1.1/", DENY_192, host("192.168.1.1", DENIED)),
    ok("http://192.169.1.1/", DENY_192),
    no("http://[::ffff:10.1.1.1]/", DENY_MAPPED_10, host("::ffff:a01:101", DENIED)),
    gap("http://10.1.1.1/", DENY_MAPPED_10, DENY_MAPPED, host("10.1.1.1", DENIED)),
    no("http://10.255.255.255/", DENY_MAPPED_10, host("10.255.255.255", DENIED)),
    ok("http://11.0.0.1/", DENY_MAPPED_10),
    ok("http://9.255.255.255/", DENY_MAPPED_10),
    no("http://93.184.216.34/", UrlPolicy(deny_cidrs=("::ffff:0:0/96",)), host("93.184.216.34", DENIED)),
    no("http://93.184.216.35/", UrlPolicy(deny_cidrs=("::ffff:93.184.216.35/128",)), host("93.184.216.35", DENIED)),
    ok("http://93.184.216.34/", UrlPolicy(deny_cidrs=("::ffff:93.184.216.35/128",))),
    ok("http://10.1.1.1/", UrlPolicy(deny_cidrs=("::a00:0/104",))),  # IPv4-compatible, not mapped
    no("http://169.254.169.254/", DENY_LINK_LOCAL, host("169.254.169.254", DENIED)),
    gap("http://[2002:a9fe:a9fe::]/", DENY_LINK_LOCAL, DENY_6TO4,
        host("2002:a9fe:a9fe::", EMBEDS.format(inner="169.254.169.254", reason=DENIED))),
    # --- host names ------------------------------------------------------------------------------
    ok("http://EXAMPLE.COM/Path", DEFAULT, "http://example.com/Path"),
    no("http://LOCALHOST./", CLOSED, host("localhost (127.0.0.1)", LOOPBACK)),
    no("http://foo.localhost./", CLOSED, host("foo.localhost (127.0.0.1)", LOOPBACK)),
    ok("http://LOCALHOST.:8080/", DEFAULT, "http://localhost:8080/"),
    ok("http://notlocalhost/", CLOSED),
    ok("http://localhost.example.com/", CLOSED),
    no("http://localhost../", DEFAULT, HOST),
    no("http://a..b/", DEFAULT, HOST),
    no("http://.example.com/", DEFAULT, HOST),
    no("http://./", DEFAULT, HOST),
    no("http://-a.com/", DEFAULT, HOST),
    no("http://a-.com/", DEFAULT, HOST),
    no("http://a!b.com/", DEFAULT, HOST),
    ok("http://a_b.example/", DEFAULT),
    ok("http://x/", DEFAULT),
    ok("http://" + "a" * 63 + ".com/", DEFAULT, id="63-character-label"),
    no("http://" + "a" * 64 + ".com/", DEFAULT, HOST, id="64-character-label"),
    ok(f"http://{LONGEST_HOST}/", DEFAULT, id="253-character-host"),
    ok(f"http://{LONGEST_HOST}./", DEFAULT, f"http://{LONGEST_HOST}/", id="253-character-host-dot"),
    no(f"http://{LONGEST_HOST}a/", DEFAULT, HOST, id="254-character-host"),
    # --- IDNA and Unicode look-alikes ---------------------------------------------------------------
    ok("http://b\u00fccher.example/", DEFAULT, "http://xn--bcher-kva.example/", id="idna-buecher"),
    ok("http://B\u00dcCHER.example/", DEFAULT, "http://xn--bcher-kva.example/", id="idna-BUECHER"),
    ok("http://xn--bcher-kva.example/", DEFAULT),
    ok("http://ex\u0430mple.com/", DEFAULT, "http://xn--exmple-4nf.com/", id="cyrillic-a"),
    no("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", CLOSED, host("127.0.0.1", LOOPBACK), id="fullwidth-ipv4"),
    no("http://127\u30020\u30020\u30021/", CLOSED, host("127.0.0.1", LOOPBACK), id="ideographic-dots"),
    no("http://\u2488.com/", DEFAULT, HOST, id="digit-full-stop"),
    no("http://xn--/", DEFAULT, HOST),
    # --- whitespace, control characters, length, type ----------------------------------------------
    no("http://exa\x00mple.com/", DEFAULT, SPACE, id="nul"),
    no("http://example.com/\x7f", DEFAULT, SPACE, id="del"),
    no("http://exa\u200bmple.com/", DEFAULT, SPACE, id="zero-width-space"),
    no("http://exa\u00admple.com/", DEFAULT, SPACE, id="soft-hyphen"),
    no("http://exa\u200dmple.com/", DEFAULT, SPACE, id="zero-width-joiner"),
    no("http://example.com/\u00a0", DEFAULT, SPACE, id="nbsp"),
    no("http://example.com/\u2028", DEFAULT, SPACE, id="line-separator"),
    no("\thttp://example.com/", DEFAULT, SPACE, id="leading-tab"),
    no(" http://example.com/", DEFAULT, SPACE, id="leading-space"),
    ok("http://example.com/" + "a" * (MAX_URL_LENGTH - 19), DEFAULT, id="exactly-2048"),
    no("http://example.com/" + "a" * (MAX_URL_LENGTH - 18), DEFAULT, TOO_LONG, id="2049"),
    no("http://169.254.169.254/" + "a" * MAX_URL_LENGTH, DEFAULT, TOO_LONG, id="long-metadata"),
]


@pytest.mark.parametrize(("url", "policy", "expected"), TABLE)
def test_the_url_table(url: str, policy: UrlPolicy, expected: tuple[str, str | None]) -> None:
    outcome, value = expected
    try:
        got = check_url(url, policy, "config.url")
    except UrlPolicyError as exc:
        assert outcome == "refused", f"{url!r} refused: {exc.message}"
        assert exc.field == "config.url"
        assert isinstance(exc, FieldError)
        if value is not None:
            assert exc.message == value
        return
    assert outcome == "ok", f"{url!r} accepted as {got!r}"
    assert got == value
    assert check_url(got, policy) == got  # normalising twice changes nothing


def test_the_table_has_no_duplicate_rows() -> None:
    rows = [(p.values[0], id(p.values[1])) for p in TABLE]
    assert len(rows) == len(set(rows))


@pytest.mark.parametrize("value", [None, 123, b"http://example.com/", ["http://example.com/"], ""])
def test_no_url_at_all_is_required(value: Any) -> None:
    with pytest.raises(UrlPolicyError) as caught:
        check_url(value, DEFAULT, "health_url")
    assert (caught.value.field, caught.value.message) == ("health_url", REQUIRED)


def test_the_default_field_is_url() -> None:
    with pytest.raises(UrlPolicyError) as caught:
        check_url("http://169.254.169.254/", DEFAULT)
    assert caught.value.field == "url"
    assert str(caught.value) == "url: " + host("169.254.169.254", METADATA)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/iam?token=s3cr3t#frag",
    "http://0xa9fea9fe/s3cr3t?s3cr3t=1",
    "http://metadata/s3cr3t",
    "http://[fe80::1]/s3cr3t",
    "http://10.0.0.1:8080/s3cr3t",
])
def test_a_refusal_never_repeats_the_path_or_query(url: str) -> None:
    with pytest.raises(UrlPolicyError) as caught:
        check_url(url, UrlPolicy(allow_private=False))
    assert "s3cr3t" not in caught.value.message and "s3cr3t" not in str(caught.value)


# --- the policy object -------------------------------------------------------------------------------

def test_a_policy_is_immutable_hashable_and_its_parsed_ranges_stay_private() -> None:
    policy = UrlPolicy(allow_cidrs=("10.0.0.0/8",), deny_cidrs=("10.1.0.0/16",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.allow_cidrs = ()  # type: ignore[misc]
    assert hash(policy) == hash(UrlPolicy(allow_cidrs=("10.0.0.0/8",), deny_cidrs=("10.1.0.0/16",)))
    assert "_allow" not in repr(policy) and "_deny" not in repr(policy)
    assert repr(policy) == ("UrlPolicy(allow_cidrs=('10.0.0.0/8',), deny_cidrs=('10.1.0.0/16',), "
                            "allow_private=True, allow_loopback=True)")
    assert {f.name for f in dataclasses.fields(policy) if f.init} == {
        "allow_cidrs", "deny_cidrs", "allow_private", "allow_loopback"}
    assert (UrlPolicy().allow_private, UrlPolicy().allow_loopback) == (True, True)


def test_cidrs_with_host_bits_and_spaces_are_read_as_their_network() -> None:
    policy = UrlPolicy.from_strings(" 10.0.0.1/8 ,", "fd00::1/8")
    assert policy.allow_cidrs == ("10.0.0.1/8",) and policy.deny_cidrs == ("fd00::1/8",)
    assert check_url("http://10.200.0.1/", policy) == "http://10.200.0.1/"
    with pytest.raises(UrlPolicyError) as caught:
        check_url("http://[fd99::1]/", UrlPolicy.from_strings("", "fd00::1/8"))
    assert caught.value.message == host("fd99::1", DENIED)


@pytest.mark.parametrize(("allow", "deny", "bad"), [
    ("10.0.0.0/8,10.0.0.0/33", "", "10.0.0.0/33"),
    ("", "192.168.0.0/16, example.com", "example.com"),
    ("::/129", "", "::/129"),
])
def test_a_bad_cidr_names_exactly_the_bad_entry(allow: str, deny: str, bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        UrlPolicy.from_strings(allow, deny)
    assert str(caught.value) == f"not a valid CIDR: {bad!r}"


# --- resolution (opt-in) -----------------------------------------------------------------------------

class Resolver:
    """A stand-in for socket.getaddrinfo that records what it was asked."""

    def __init__(self, table: dict[str, list[str]], error: type[BaseException] = socket.gaierror) -> None:
        self.table, self.error, self.calls = table, error, []

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        self.calls.append((host, port))
        if host not in self.table:
            raise self.error("no such host")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port, 0, 0) if ":" in a else (a, port)) for a in self.table[host]]


@pytest.mark.parametrize(("url", "port"), [
    ("http://svc.example/", 80), ("https://svc.example/", 443), ("https://svc.example:8443/", 8443),
    ("http://svc.example:443/", 443),
])
def test_resolution_asks_for_the_urls_port(monkeypatch: pytest.MonkeyPatch, url: str, port: int) -> None:
    resolver = Resolver({"svc.example": ["93.184.216.34"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    assert check_url(url, DEFAULT, resolve=True) == url
    assert resolver.calls == [("svc.example", port)]


@pytest.mark.parametrize("url", ["http://93.184.216.34/", "http://[2606:2800:220:1::]/", "http://0x7f000001/"])
def test_address_literals_are_never_resolved(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    resolver = Resolver({})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    check_url(url, DEFAULT, resolve=True)
    assert resolver.calls == []


def test_names_are_not_resolved_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Resolver({"evil.example": ["169.254.169.254"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    assert check_url("http://evil.example/", CLOSED) == "http://evil.example/"
    assert resolver.calls == []


@pytest.mark.parametrize(("addresses", "policy", "message"), [
    (["169.254.169.254"], DEFAULT, host("evil.example (169.254.169.254)", METADATA)),
    (["fe80::1%eth0"], DEFAULT, host("evil.example (fe80::1)", LINK_LOCAL)),
    (["93.184.216.34", "10.0.0.1"], CLOSED, host("evil.example (10.0.0.1)", PRIVATE)),
    (["::1", "127.0.0.1"], CLOSED, host("evil.example (::1)", LOOPBACK)),
    (["10.0.0.1"], ALLOW_10_DENY_10_1, None),
    (["10.1.0.1"], ALLOW_10_DENY_10_1, host("evil.example (10.1.0.1)", DENIED)),
    (["not-an-address"], DEFAULT, "the URL's host evil.example does not resolve"),
    (["not-an-address", "169.254.169.254"], DEFAULT, host("evil.example (169.254.169.254)", METADATA)),
    ([], DEFAULT, "the URL's host evil.example does not resolve"),
])
def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch, addresses: list[str],
                                           policy: UrlPolicy, message: str | None) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", Resolver({"evil.example": addresses}))
    if message is None:
        assert check_url("https://evil.example/x", policy, resolve=True) == "https://evil.example/x"
        return
    with pytest.raises(UrlPolicyError) as caught:
        check_url("https://evil.example/x", policy, "webhook", resolve=True)
    assert (caught.value.field, caught.value.message) == ("webhook", message)


@pytest.mark.parametrize(("addresses", "message"), [
    (["10.1.2.3"], None),
    (["10.1.2.3", "93.184.216.34"], host("svc.example (93.184.216.34)", NOT_ALLOWED)),
    (["2002:a00:1::1"], host("svc.example (2002:a00:1::1)", NOT_ALLOWED)),
    (None, "the URL's host svc.example does not resolve"),
])
def test_in_allow_list_mode_a_name_must_resolve_into_the_list(
        monkeypatch: pytest.MonkeyPatch, addresses: list[str] | None, message: str | None) -> None:
    """Was a product bug: in allow-list mode a host name was accepted unresolved, so the allow list did not
    constrain names at all. Now the name is resolved even without ``resolve=True``."""
    resolver = Resolver({"svc.example": addresses} if addresses is not None else {})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    if message is None:
        assert check_url("https://svc.example/x", ALLOW_10) == "https://svc.example/x"
    else:
        with pytest.raises(UrlPolicyError) as caught:
            check_url("https://svc.example/x", ALLOW_10)
        assert caught.value.message == message
    assert resolver.calls == [("svc.example", 443)]


def test_outside_allow_list_mode_names_and_localhost_are_not_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Resolver({"localhost": ["10.1.2.3"], "svc.example": ["10.1.2.3"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    assert check_url("http://svc.example/", DENY_TEN) == "http://svc.example/"
    with pytest.raises(UrlPolicyError) as caught:
        check_url("http://localhost/", ALLOW_10)  # localhost is known without asking a resolver
    assert caught.value.message == host("localhost (127.0.0.1)", NOT_ALLOWED)
    assert resolver.calls == []


@pytest.mark.parametrize(("address", "embedded"), [
    ("::ffff:1.2.3.4", ["1.2.3.4"]),
    ("2002:a9fe:a9fe::1", ["169.254.169.254"]),
    ("2001:0:4136:e378:8000:63bf:5601:5601", ["65.54.227.120", "169.254.169.254"]),
    ("64:ff9b::a9fe:a9fe", ["169.254.169.254"]),
    ("64:ff9b::102:305", ["1.2.3.5"]),
    ("64:ff9b:1::a9fe:a9fe", ["169.254.169.254"]),
    ("64:ff9b:1:ffff::a9fe:a9fe", ["169.254.169.254"]),
    ("64:ff9b::1:a9fe:a9fe", []),
    ("64:ff9b:2::a9fe:a9fe", []),
    ("::a9fe:a9fe", ["169.254.169.254"]),
    ("::102:305", ["1.2.3.5"]),
    ("::1:0", ["0.1.0.0"]),
    ("::ffff", []),
    ("::1", []),
    ("::", []),
    ("2606:2800:220:1::", []),
    ("1.2.3.4", []),
])
def test_the_ipv4_addresses_an_ipv6_address_embeds(address: str, embedded: list[str]) -> None:
    assert embedded_ipv4(ipaddress.ip_address(address)) == [ipaddress.IPv4Address(a) for a in embedded]


@pytest.mark.parametrize(("address", "policy", "reason"), [
    ("64:ff9b::a9fe:a9fe", DEFAULT, RESERVED),
    ("2002:a9fe:a9fe::1", DEFAULT, EMBEDS.format(inner="169.254.169.254", reason=METADATA)),
    ("::ffff:a9fe:a9fe", DEFAULT, METADATA),
    ("::ffff:5db8:d822", DENY_ALL_V4, DENIED),
    ("2002:5db8:d822::", DEFAULT, None),
    ("93.184.216.34", DEFAULT, None),
])
def test_address_refusal_judges_an_address_and_what_it_embeds(address: str, policy: UrlPolicy,
                                                             reason: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address), policy) == reason


@pytest.mark.parametrize("error", [socket.gaierror, OSError, UnicodeError])
def test_a_name_that_cannot_be_resolved_is_refused(monkeypatch: pytest.MonkeyPatch, error: type) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", Resolver({}, error))
    with pytest.raises(UrlPolicyError) as caught:
        check_url("http://gone.example/", DEFAULT, resolve=True)
    assert caught.value.message == "the URL's host gone.example does not resolve"


def test_a_resolved_localhost_is_checked_as_loopback_and_as_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Resolver({"localhost": ["10.0.0.1"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(UrlPolicyError) as caught:
        check_url("http://localhost/", UrlPolicy(allow_private=False), resolve=True)
    assert caught.value.message == host("localhost (10.0.0.1)", PRIVATE)
    with pytest.raises(UrlPolicyError) as caught:
        check_url("http://localhost/", UrlPolicy(allow_loopback=False), resolve=True)
    assert caught.value.message == host("localhost (127.0.0.1)", LOOPBACK)
