"""The OpenAPI 3.1 document, generated from the declared endpoints."""

from __future__ import annotations

from typing import Any, Iterable

from .. import __version__
from .routing import ERROR_SCHEMA, Endpoint

_ERRORS = {400: "Bad request", 401: "No valid API key", 403: "This key may not do that", 404: "Not found",
           409: "Conflicts with an existing resource, or with the incident's stage", 410: "Expired", 413: "Body too large", 415: "Body is not JSON",
           422: "The body breaks the schema or a policy (the field is named)",
           429: "Too many failed authentications from this address at once: retry later (Retry-After)",
           503: "A transient fault storing the request: retry (Retry-After)"}


def openapi_document(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op: dict[str, Any] = {"operationId": ep.operation_id, "summary": ep.summary, "tags": list(ep.tags)}
        codes = set(ep.errors)
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in ep.path_params]
        params += [{"name": n, "in": "query", "required": False, "schema": s} for n, s in (ep.query or {}).items()]
        if params:
            op["parameters"] = params
            codes.add(400)   # a NUL character in the path or query is refused (routing._no_nul)
        if ep.query:
            codes.add(422)
        if ep.request is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ep.request}}}
            codes |= {400, 413, 415, 422}
        ok: dict[str, Any] = {"description": "Success"}
        if ep.response is not None:
            ok["content"] = {ep.media_type: {"schema": ep.response},
                             **{m: {"schema": {"type": "string"}} for m in ep.also_media}}
        op["responses"] = {str(ep.status): ok}
        if ep.public:
            op["security"] = []
        elif ep.integration:
            op["security"] = [{"integrationKey": []}]
            codes |= {400, 401, 413, 415, 429, 503}
        else:
            op["security"] = [{"bearerAuth": []}]
            op["x-permission"] = ep.permission
            codes |= {401, 403, 429}
            if ep.path_params:
                codes.add(404)
        error_content = ({"text/html": {"schema": {"type": "string"}}} if ep.media_type == "text/html" else
                         {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
        for code in sorted(codes):
            op["responses"][str(code)] = {"description": _ERRORS[code], "content": error_content}
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "AlertEngine", "version": __version__,
                 "description": "Incident command appliance. Every change is written to a signed, verifiable ledger."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "An API key: Authorization: Bearer ae_<id>_<secret>"},
                                "integrationKey": {"type": "http", "scheme": "bearer",
                                                   "description": "A tenant's ingest key, as a bearer header, as the "
                                                                  "last path segment, or as PagerDuty's routing_key"}},
        },
        "security": [{"bearerAuth": []}],
    }
