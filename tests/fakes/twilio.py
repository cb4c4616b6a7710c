"""A fake Twilio REST API on 127.0.0.1 (Messages and Calls of one account) that also plays Twilio
calling the appliance back with signed webhooks.

Wire behaviour follows Twilio's API reference: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``
and ``.../Calls.json`` with ``application/x-www-form-urlencoded`` bodies (a name may repeat), HTTP Basic
``AccountSid:AuthToken``, ``201`` with the created resource as JSON, errors as
``{"code", "message", "more_info", "status"}`` (or RFC 9457 ``{"type", "title", "status", "code",
"detail"}`` when asked). Error codes are Twilio's documented ones; where Twilio's docs quote no
wording, the message is this fake's own. Deliberate differences: no resource can be fetched back
(GET answers 405), templates are not rendered (``body`` is empty), no callback is sent on its own
(tests call :meth:`FakeTwilio.post_signed` with the forms built here).

Usage::

    with FakeTwilio() as fake:
        client = TwilioClient(fake.base_url, fake.account_sid, fake.auth_token, http)
        fake.fail_next("Messages", status=429, retry_after=2)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import xml.etree.ElementTree as ET
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.fakes.http import FakeHandler, FakeService

API_VERSION = "2010-04-01"
RESOURCES = ("Messages", "Calls")
MAX_BODY = 1 << 20
MAX_MESSAGE_BODY = 1600                 # characters (error 21617)
MAX_TWIML = 4000                        # characters (error 32018)
CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
WHATSAPP_SANDBOX = "+14155238886"       # Twilio's WhatsApp sandbox number: the default sender
_PATH = re.compile(r"/2010-04-01/Accounts/([^/]+)/([A-Za-z]+)\.json")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
_APP_SID = re.compile(r"AP[0-9a-fA-F]{32}")
_DEFAULT_ERRORS = {400: (21211, "Invalid 'To' Phone Number"), 401: (20003, "Authenticate"),
                   403: (20403, "Forbidden"), 404: (20404, "The requested resource was not found"),
                   405: (20004, "Method not allowed"), 429: (20429, "Too Many Requests"),
                   500: (20500, "Internal Server Error"), 502: (20500, "Bad Gateway"),
                   503: (20503, "Service Unavailable")}
Form = dict[str, Any]                   # name -> value, or -> [values] for a repeated name


class TwilioError(Exception):
    """A request the fake refuses with Twilio's error ``code``."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class InjectedFailure:
    status: int
    code: int | None = None
    message: str | None = None
    retry_after: int | str | None = None    # seconds, or an HTTP date as a string
    rfc9457: bool = False
    body: bytes | None = None               # a raw body instead (e.g. a proxy's HTML page)


def legacy_error(code: int, message: str, status: int) -> dict[str, Any]:
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


def rfc9457_error(code: int, message: str, status: int) -> dict[str, Any]:
    return {"type": f"https://www.twilio.com/docs/errors/{code}", "title": message.split(".")[0],
            "status": status, "code": code, "detail": message}


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822() -> str:
    return formatdate(usegmt=False).replace("-0000", "+0000")


def _grouped(pairs: Iterable[tuple[str, str]]) -> Form:
    out: Form = {}
    for name, value in pairs:
        if name in out:
            out[name] = [*out[name], value] if isinstance(out[name], list) else [out[name], value]
        else:
            out[name] = value
    return out


def _one(form: Form, name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, list):
        raise TwilioError(20001, f"{name} may be given once")     # the fake's own wording
    return value


def _http_url(value: str, code: int, what: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TwilioError(code, f"{what} is not a valid URL: {value}")


class _MultiValues(dict):
    """Form values as twilio's RequestValidator reads a Flask MultiDict (``getall``)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._all: dict[str, list[str]] = defaultdict(list)
        for name, value in pairs:
            self._all[name].append(value)
        super().__init__((name, values[0]) for name, values in self._all.items())

    def getall(self, name: str) -> list[str]:
        return list(self._all[name])


class FakeTwilio(FakeService):
    """Twilio's Messages and Calls for one account; records each authenticated create request
    (accepted or refused) in ``messages`` / ``calls`` and each created resource in ``created``."""

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None) -> None:
        super().__init__()
        self.account_sid = account_sid or sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.messages: list[Form] = []
        self.calls: list[Form] = []
        self.created: dict[str, dict[str, Any]] = {}    # sid -> the JSON answered
        self.unauthorized = 0
        self._requests = 0
        self._lock = threading.Lock()
        self._failures: dict[str, deque[InjectedFailure]] = defaultdict(deque)
        self._sequence: dict[str, int] = defaultdict(int)

    # ------------------------------------------------------------------------------------------
    # test controls
    # ------------------------------------------------------------------------------------------

    def fail_next(self, resource: str, status: int = 500, *, code: int | None = None, message: str | None = None,
                  retry_after: int | str | None = None, rfc9457: bool = False, body: bytes | None = None) -> None:
        """Answer the next authenticated create of ``resource`` ("Messages" or "Calls") with this
        failure instead (queued: one per request). The request is still recorded."""
        name = _resource(resource)
        if name is None:
            raise ValueError(f"resource is one of {RESOURCES}")
        with self._lock:
            self._failures[name].append(InjectedFailure(status, code, message, retry_after, rfc9457, body))

    def requests(self) -> int:
        """How many requests reached the fake (any path, authenticated or not)."""
        with self._lock:
            return self._requests

    # ------------------------------------------------------------------------------------------
    # Twilio calling back
    # ------------------------------------------------------------------------------------------

    async def post_signed(self, url: str, params: Mapping[str, str] | list[tuple[str, str]], auth_token: str,
                          http: httpx.AsyncClient) -> httpx.Response:
        """POST ``params`` form-encoded to ``url`` as Twilio does, signed with twilio's own
        RequestValidator under ``auth_token`` (``X-Twilio-Signature``)."""
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
        signature = RequestValidator(auth_token).compute_signature(url, _MultiValues(pairs))
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                   "X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1",
                   "I-Twilio-Idempotency-Token": secrets.token_hex(16)}
        return await http.post(url, content=urlencode(pairs).encode("utf-8"), headers=headers)

    def message_status(self, message_sid: str, status: str, error_code: int | str | None = None, *,
                       to: str | None = None, from_: str | None = None) -> dict[str, str]:
        """A Messages status callback (To/From default to the created message's)."""
        with self._lock:
            created = self.created.get(message_sid, {})
        form = {"MessageSid": message_sid, "SmsSid": message_sid, "AccountSid": self.account_sid,
                "From": from_ or created.get("from") or f"whatsapp:{WHATSAPP_SANDBOX}",
                "To": to or created.get("to") or "whatsapp:+15005550006",
                "MessageStatus": status, "SmsStatus": status, "ApiVersion": API_VERSION}
        if (form["From"] or "").startswith("whatsapp:"):
            form["ChannelPrefix"] = "whatsapp"
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        return form

    def call_status(self, call_sid: str, status: str, *, duration: int = 12, to: str | None = None,
                    from_: str | None = None) -> dict[str, str]:
        """A call-progress status callback (To/From default to the created call's); ``CallDuration``
        when the call completed. SequenceNumber counts the callbacks of each call from 0."""
        with self._lock:
            created = self.created.get(call_sid, {})
            sequence = self._sequence[call_sid]
            self._sequence[call_sid] += 1
        form = {"CallSid": call_sid, "AccountSid": self.account_sid,
                "From": from_ or created.get("from") or "+15005550006",
                "To": to or created.get("to") or "+15005550001",
                "CallStatus": status, "Direction": "outbound-api", "ApiVersion": API_VERSION,
                "CallbackSource": "call-progress-events", "Timestamp": _rfc2822(), "SequenceNumber": str(sequence)}
        if status == "completed":
            form["CallDuration"] = str(duration)
        return form

    def inbound_whatsapp(self, from_number: str, body: str, *, to: str | None = None,
                         original_replied_sid: str | None = None, button_payload: str | None = None,
                         button_text: str | None = None, profile_name: str = "Ann") -> dict[str, str]:
        """A WhatsApp message from ``from_number`` (+E164) to our sender, as the incoming-message
        webhook carries it; a reply to one of our messages names it in OriginalRepliedMessageSid."""
        number = from_number.removeprefix("whatsapp:")
        ours = (to or WHATSAPP_SANDBOX).removeprefix("whatsapp:")
        message_sid = sid("SM")
        form = {"MessageSid": message_sid, "SmsSid": message_sid, "SmsMessageSid": message_sid,
                "AccountSid": self.account_sid, "From": f"whatsapp:{number}", "To": f"whatsapp:{ours}",
                "Body": body, "NumMedia": "0", "NumSegments": "1", "ProfileName": profile_name,
                "WaId": number.lstrip("+"), "MessageType": "button" if button_payload is not None else "text",
                "SmsStatus": "received", "ApiVersion": API_VERSION}
        if original_replied_sid is not None:
            form["OriginalRepliedMessageSender"] = f"whatsapp:{ours}"
            form["OriginalRepliedMessageSid"] = original_replied_sid
        if button_payload is not None:
            form["ButtonPayload"] = button_payload
            form["ButtonText"] = button_text if button_text is not None else button_payload
        return form

    def gather(self, call_sid: str, digits: str, to: str, from_: str) -> dict[str, str]:
        """The ``<Gather>`` result of an outbound call: the call's fields plus ``Digits``
        (``FinishedOnKey`` is blank when numDigits ended the gather, as Twilio sends it)."""
        return {"CallSid": call_sid, "AccountSid": self.account_sid, "From": from_, "To": to,
                "CallStatus": "in-progress", "Direction": "outbound-api", "ApiVersion": API_VERSION,
                "Digits": digits, "FinishedOnKey": ""}

    # ------------------------------------------------------------------------------------------
    # the API
    # ------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, authorization: str | None,
               form: Form) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        """(HTTP status, JSON document or raw body, extra headers) for one request."""
        match = _PATH.fullmatch(path)
        resource = _resource(match.group(2)) if match else None
        if match is None or resource is None:
            return 404, legacy_error(20404, "The requested resource was not found", 404), {}
        if not self._authorized(match.group(1), authorization):
            with self._lock:
                self.unauthorized += 1
            return 401, legacy_error(20003, "Authenticate", 401), {"WWW-Authenticate": 'Basic realm="Twilio API"'}
        if method != "POST":
            return 405, legacy_error(20004, "Method not allowed", 405), {}
        with self._lock:
            (self.messages if resource == "Messages" else self.calls).append(form)
            queue = self._failures.get(resource)
            failure = queue.popleft() if queue else None
        if failure is not None:
            return _injected(failure)
        try:
            doc = self._message(form) if resource == "Messages" else self._call(form)
        except TwilioError as exc:
            return exc.status, legacy_error(exc.code, exc.message, exc.status), {}
        with self._lock:
            self.created[doc["sid"]] = doc
        return 201, doc, {}

    def _authorized(self, path_sid: str, authorization: str | None) -> bool:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and user == self.account_sid == path_sid and secrets.compare_digest(password, self.auth_token)

    def _message(self, form: Form) -> dict[str, Any]:
        to, from_, service = _one(form, "To"), _one(form, "From"), _one(form, "MessagingServiceSid")
        body, content_sid, variables = _one(form, "Body"), _one(form, "ContentSid"), _one(form, "ContentVariables")
        if not to:
            raise TwilioError(21604, "A 'To' phone number is required.")
        if not from_ and not service:
            raise TwilioError(21603, "A 'From' phone number is required.")
        if (body is None) == (content_sid is None):
            raise TwilioError(21619, "A text message body, media url or content sid is required (exactly one of "
                                     "Body and ContentSid).")
        whatsapp = to.startswith("whatsapp:")
        if not _E164.fullmatch(to.removeprefix("whatsapp:")):
            raise TwilioError(21211, f"The 'To' number {to} is not a valid phone number.")
        if from_ is not None:
            if not _E164.fullmatch(from_.removeprefix("whatsapp:")):
                raise TwilioError(21212, f"The 'From' number {from_} is not a valid phone number, shortcode, "
                                         "or alphanumeric sender ID.")
            if from_.startswith("whatsapp:") != whatsapp:
                raise TwilioError(21910, "Invalid From and To pair. From and To should be of the same channel")
        elif not _SERVICE_SID.fullmatch(service or ""):
            raise TwilioError(21701, f"The Messaging Service Sid {service} is invalid.")
        if body is not None and not body.strip():
            raise TwilioError(21619, "A text message body, media url or content sid is required.")
        if body is not None and len(body) > MAX_MESSAGE_BODY:
            raise TwilioError(21617, "The concatenated message body exceeds the 1600 character limit.")
        if content_sid is not None and not _CONTENT_SID.fullmatch(content_sid):
            raise TwilioError(21655, "The ContentSid is Invalid.")
        if variables is not None:
            try:
                doc = json.loads(variables)
            except ValueError:
                doc = None
            if content_sid is None or not isinstance(doc, dict) or \
                    not all(isinstance(v, (str, int, float)) for v in doc.values()):
                raise TwilioError(21656, "The ContentVariables Parameter is invalid.")
        callback = _one(form, "StatusCallback")
        if callback is not None:
            _http_url(callback, 21609, "StatusCallback")
        message_sid, now = sid("SM"), _rfc2822()
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{message_sid}"
        return {"account_sid": self.account_sid, "api_version": API_VERSION, "body": body or "",
                "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
                "error_code": None, "error_message": None, "from": from_, "messaging_service_sid": service,
                "num_media": "0", "num_segments": "1", "price": None, "price_unit": "USD", "sid": message_sid,
                "status": "queued", "subresource_uris": {"media": f"{uri}/Media.json"}, "to": to,
                "uri": f"{uri}.json"}

    def _call(self, form: Form) -> dict[str, Any]:
        to, from_ = _one(form, "To"), _one(form, "From")
        url, twiml, app = _one(form, "Url"), _one(form, "Twiml"), _one(form, "ApplicationSid")
        if not to:
            raise TwilioError(21201, "No 'To' number is specified")
        if not from_:
            raise TwilioError(21213, "No 'From' number is specified")
        if not _E164.fullmatch(to):
            raise TwilioError(21211, f"The 'To' number {to} is not a valid phone number.")
        if not _E164.fullmatch(from_):
            raise TwilioError(21212, f"The 'From' number {from_} is not a valid phone number.")
        if not (url or twiml or app):
            raise TwilioError(21205, "Url parameter is required.")
        if twiml is not None:
            _check_twiml(twiml)
        elif url is not None:
            _http_url(url, 21205, "Url")
        elif not _APP_SID.fullmatch(app or ""):
            raise TwilioError(21205, "ApplicationSid is not valid.")       # the fake's own wording
        timeout = _one(form, "Timeout")
        if timeout is not None and not (timeout.isdigit() and 1 <= int(timeout) <= 600):
            raise TwilioError(20001, f"Invalid Timeout: {timeout}")         # the fake's own wording
        callback = _one(form, "StatusCallback")
        if callback is not None:
            _http_url(callback, 21609, "StatusCallback")
        if (_one(form, "StatusCallbackMethod") or "POST") not in ("GET", "POST"):
            raise TwilioError(20001, "StatusCallbackMethod must be GET or POST")    # the fake's own wording
        events = form.get("StatusCallbackEvent", [])
        for event in events if isinstance(events, list) else [events]:
            if event not in CALL_EVENTS:
                raise TwilioError(20001, f"Invalid StatusCallbackEvent: {event}")   # the fake's own wording
        call_sid, now = sid("CA"), _rfc2822()
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call_sid}"
        return {"account_sid": self.account_sid, "annotation": None, "answered_by": None,
                "api_version": API_VERSION, "caller_name": None, "date_created": now, "date_updated": now,
                "direction": "outbound-api", "duration": None, "end_time": None, "forwarded_from": None,
                "from": from_, "from_formatted": from_, "group_sid": None, "parent_call_sid": None,
                "phone_number_sid": sid("PN"), "price": None, "price_unit": "USD", "queue_time": "0",
                "sid": call_sid, "start_time": None, "status": "queued",
                "subresource_uris": {"notifications": f"{uri}/Notifications.json",
                                     "recordings": f"{uri}/Recordings.json"},
                "to": to, "to_formatted": to, "trunk_sid": None, "uri": f"{uri}.json"}


def _resource(name: str) -> str | None:
    return next((r for r in RESOURCES if r.lower() == name.lower()), None)


def _check_twiml(twiml: str) -> None:
    if len(twiml) > MAX_TWIML:
        raise TwilioError(32018, "Twiml size exceeded maximum allowed value of 4000 characters")
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise TwilioError(12100, f"Document parse failure: {exc}") from None
    if root.tag != "Response":
        raise TwilioError(12100, f"Document parse failure: the root element is <{root.tag}>, not <Response>")


def _injected(failure: InjectedFailure) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
    headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
    if failure.body is not None:
        return failure.status, failure.body, headers
    code, words = _DEFAULT_ERRORS.get(failure.status, (20001, "Error"))
    code = failure.code if failure.code is not None else code
    words = failure.message if failure.message is not None else words
    make = rfc9457_error if failure.rfc9457 else legacy_error
    return failure.status, make(code, words, failure.status), headers


# ----------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------

class _Handler(FakeHandler):
    server_version = "nginx"

    def _serve(self) -> None:
        fake: FakeTwilio = self.server.fake
        with fake._lock:
            fake._requests += 1
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._reply(411, legacy_error(20001, "Length Required", 411))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._reply(413, legacy_error(20001, "Request Entity Too Large", 413))
            return
        body = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        form: Form = {}
        if body and ctype == "application/x-www-form-urlencoded":
            try:
                form = _grouped(parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict"))
            except UnicodeDecodeError:
                self._reply(400, legacy_error(20001, "The request body is not UTF-8", 400))  # the fake's own
                return
        status, payload, headers = fake.handle(self.command, urlsplit(self.path).path,
                                               self.headers.get("Authorization"), form)
        self._reply(status, payload, headers)

    def _reply(self, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
        if isinstance(payload, bytes):
            data, ctype = payload, "text/html"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json; charset=utf-8"
        self.send(status, data, ctype, {"Twilio-Request-Id": sid("RQ"), **(headers or {})})


FakeTwilio.handler = _Handler


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A running FakeTwilio for one test (import this name into a test module or conftest to use it)."""
    with FakeTwilio() as fake:
        yield fake
