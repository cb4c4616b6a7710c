"""Outbound URL policy: which health, webhook and recovery URLs a tenant may save."""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from ..errors import FieldError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
    "fd00:ec2::254",    # AWS IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",      # Oracle Cloud (legacy)
    "168.63.129.16",    # Azure WireServer (platform agent and metadata endpoint)
))
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")      # RFC 1122: never a destination
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")         # deprecated, but still not global
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_COMPAT = ipaddress.ip_network("::/96")
_METADATA_HOSTNAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_LABEL_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")
_NETLOC_RE = re.compile(r"^(\[[^\]]*\]|[^:\[\]]+)(?::(.*))?$")


class UrlPolicyError(FieldError):
    """A URL the policy refuses; ``message`` never repeats the URL's credentials, path or query."""


_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def _parse_cidrs(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """The networks of a CIDR list; an IPv4-mapped IPv6 network also stands for its IPv4 form."""
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise ValueError(f"not a valid CIDR: {cidr!r}") from None
        networks.append(net)
        if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED) and net.prefixlen >= 96:
            networks.append(ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96)))
    return tuple(networks)


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64, IPv4-compatible)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _NAT64) or (ip in _COMPAT and int(ip) > 0xFFFF):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


@dataclass(frozen=True)
class UrlPolicy:
    """Which addresses outbound URLs may point at; deny_cidrs always wins, allow_cidrs switches to allow-list mode."""

    allow_cidrs: tuple[str, ...] = ()
    deny_cidrs: tuple[str, ...] = ()
    allow_private: bool = True
    allow_loopback: bool = True
    _allow: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _deny: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allow", _parse_cidrs(self.allow_cidrs))
        object.__setattr__(self, "_deny", _parse_cidrs(self.deny_cidrs))

    @classmethod
    def from_strings(cls, allow: str, deny: str) -> UrlPolicy:
        """Build a policy from comma-separated CIDR lists, e.g. ``"10.0.0.0/8, 192.168.0.0/16"``."""
        def split(text: str) -> tuple[str, ...]:
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return cls(allow_cidrs=split(allow), deny_cidrs=split(deny))


def address_refusal(ip: IPAddress, policy: UrlPolicy) -> str | None:
    """Why ``ip`` may not be contacted, or None if it may: judged itself and by every IPv4 address it
    embeds (an IPv6 address can carry one: mapped, 6to4, Teredo, NAT64), so no IPv6 spelling reaches
    an IPv4 address the policy refuses."""
    reason = _refusal(ip, policy)
    if reason is not None:
        return reason
    for inner in embedded_ipv4(ip):
        if inner == getattr(ip, "ipv4_mapped", None):
            continue   # already judged as itself
        reason = _refusal(inner, policy)
        if reason is not None:
            return f"embeds {inner}, which {reason}"
    return None


def _names_link_local(net: IPNetwork, ip: IPAddress) -> bool:
    """Whether an allow entry names this link-local or metadata address itself, rather than a broad
    range that merely contains it (0.0.0.0/0 must not open the metadata service)."""
    return ip in net and any(net.version == ll.version and net.subnet_of(ll) for ll in _LINK_LOCAL)  # type: ignore[arg-type]


def _refusal(ip: IPAddress, policy: UrlPolicy) -> str | None:
    """Why ``ip`` itself may not be contacted, or None if it may (see ``address_refusal``)."""
    forms = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
        forms.append(ip)
    if any(form in net for form in forms for net in policy._deny):
        return "is in a denied address range"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "is the unspecified address" if ip.is_unspecified else "is in 'this network' (0.0.0.0/8)"
    if ip.is_multicast:
        return "is a multicast address"
    if ip.is_reserved and not ip.is_loopback:  # 240.0.0.0/4 (so broadcast) and ::/8 (which holds ::1)
        return "is a reserved address"
    if policy._allow:
        special = ip in _METADATA_ADDRESSES or ip.is_link_local
        if any(form in net and (not special or _names_link_local(net, form)) for form in forms for net in policy._allow):
            return None  # an explicit allow entry lifts the category rules below
        if special and any(form in net for form in forms for net in policy._allow):
            return ("is a cloud metadata or link-local address; only an allow entry within "
                    "169.254.0.0/16 or fe80::/10 opens it")
        return "is not in the allowed address ranges"
    if ip in _METADATA_ADDRESSES:
        return "is a cloud metadata address"
    if ip.is_link_local:
        return "is a link-local address"
    if ip.is_loopback:
        return None if policy.allow_loopback else "is a loopback address, which this appliance does not allow"
    if ip.is_private or ip in _CGNAT or ip in _SITE_LOCAL:
        return None if policy.allow_private else "is a private address, which this appliance does not allow"
    return None


def _parse_host(host: str, field: str) -> tuple[str, IPAddress | None]:
    """Normalise the host part of a netloc: ``(display host, IP address if it is a literal)``."""
    invalid = UrlPolicyError(field, "the URL does not have a valid host name")
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        if "%" in inner:
            raise invalid  # zone identifiers are meaningless off this machine
        try:
            ip6 = ipaddress.IPv6Address(inner)
        except ValueError:
            raise invalid from None
        return f"[{ip6.compressed}]", ip6
    try:
        ascii_host = host.lower().encode("idna").decode("ascii")
    except UnicodeError:
        raise invalid from None
    ascii_host = ascii_host.removesuffix(".")
    labels = ascii_host.split(".")
    if _NUMERIC_LABEL_RE.match(labels[-1]):
        # Decimal, octal, hex and short IPv4 forms (2130706433, 0177.0.0.1, 0x7f.1) as resolvers read them.
        try:
            ip4 = ipaddress.IPv4Address(socket.inet_aton(ascii_host))
        except (OSError, ValueError):
            raise UrlPolicyError(field, "the URL's host is not a valid IPv4 address") from None
        return str(ip4), ip4
    if len(ascii_host) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise invalid
    return ascii_host, None


def _resolve(host: str, port: int, field: str) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        infos = []
    addresses = []
    for *_, sockaddr in infos:
        try:
            addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
        except ValueError:
            continue
    if not addresses:
        raise UrlPolicyError(field, f"the URL's host {host} does not resolve")
    return addresses


def check_url(url: str, policy: UrlPolicy, field: str = "url", *, resolve: bool = False) -> str:
    """Return ``url`` normalised, or raise UrlPolicyError saying why it may not be saved."""
    if not isinstance(url, str) or not url:
        raise UrlPolicyError(field, "a URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise UrlPolicyError(field, f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in url):
        raise UrlPolicyError(field, "the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UrlPolicyError(field, "the URL cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise UrlPolicyError(field, "the URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise UrlPolicyError(field, "the URL must not contain a user name or password; "
                                    "put credentials in the channel's secrets instead")
    match = _NETLOC_RE.match(parts.netloc)
    if not match:
        raise UrlPolicyError(field, "the URL has no valid host (IPv6 addresses go in brackets: http://[::1]/)")
    host, port_text = match.groups()
    port: int | None = None
    if port_text:
        if not _PORT_RE.match(port_text) or not 1 <= int(port_text) <= 65535:
            raise UrlPolicyError(field, "the URL's port must be a number from 1 to 65535")
        port = int(port_text)
    display, ip = _parse_host(host, field)

    if ip is not None:
        addresses = [ip]
    elif display in _METADATA_HOSTNAMES:
        raise UrlPolicyError(field, f"the URL's host {display} is a cloud metadata service")
    elif display == "localhost" or display.endswith(".localhost"):
        addresses = [ipaddress.IPv4Address("127.0.0.1")]
    else:
        addresses = []
    if ip is None and (resolve or (policy._allow and not addresses)):
        # in allow-list mode a name is only allowed once it is known to resolve into the list
        addresses += _resolve(display, port or _DEFAULT_PORTS[scheme], field)
    for address in addresses:
        reason = address_refusal(address, policy)
        if reason is not None:
            subject = str(address) if ip is not None else f"{display} ({address})"
            raise UrlPolicyError(field, f"the URL's host {subject} {reason}")

    netloc = display if port is None else f"{display}:{port}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))
