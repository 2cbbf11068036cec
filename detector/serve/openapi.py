"""The OpenAPI description of POST /detect (in /openapi.json): its three body forms and its answers' envelopes,
which FastAPI cannot infer from a handler that reads the request itself."""

from __future__ import annotations

from typing import Any, Optional, Union

from .detect_request import RAW_BODY_TYPES, REQUEST_SETTING_MAXIMUMS, REQUEST_SETTINGS

DETECT_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in RAW_BODY_TYPES},
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "byte", "description": "the image or PDF, base64"},
                        "url": {"type": "string", "description": "only on servers started with --allow-urls"},
                        "logId": {"type": "string"},
                        **{
                            key: {
                                "type": {float: "number", int: "integer", str: "string"}[kind],
                                **(
                                    {"maximum": REQUEST_SETTING_MAXIMUMS[key]}
                                    if key in REQUEST_SETTING_MAXIMUMS
                                    else {}
                                ),
                            }
                            for key, kind in REQUEST_SETTINGS.items()
                        },
                    },
                }
            },
        },
    }
}


def _envelope_schema(result: Optional[dict[str, Any]]) -> dict[str, Any]:
    """OpenAPI schema of envelope(): with its result on success, without one on a refusal."""
    properties: dict[str, Any] = {
        "logId": {"type": "string"},
        "errorCode": {"type": "integer", "description": "0 on success, else the HTTP status"},
        "errorMsg": {"type": "string"},
    }
    if result is not None:
        properties["result"] = result
    return {"type": "object", "required": list(properties), "properties": properties}


_POLYGONS = {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}}
_DETECT_RESULT = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "settings": {"type": "object", "description": "the settings the request ran with"},
        "time_ms": {"type": "number"},
        "pages": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "page_index": {
                        "anyOf": [{"type": "integer"}, {"type": "null"}],
                        "description": "null for a single image",
                    },
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                    "dt_polys": {**_POLYGONS, "description": "boxes as [x, y] points, original-image pixels"},
                    "dt_scores": {"type": "array", "items": {"type": "number"}},
                    "time_ms": {"type": "number"},
                },
            },
        },
    },
}
_REFUSAL = {"content": {"application/json": {"schema": _envelope_schema(None)}}}
DETECT_RESPONSES: dict[Union[int, str], dict[str, Any]] = {
    200: {
        "description": "the boxes of every page",
        "content": {"application/json": {"schema": _envelope_schema(_DETECT_RESULT)}},
    },
    **{
        status: {"description": meaning, **_REFUSAL}
        for status, meaning in (
            (400, "malformed request, unknown key or query parameter"),
            (403, "a URL on a server without --allow-urls"),
            (408, "the request body stopped arriving for --timeout-stall seconds"),
            (413, "body above --max-body-mb, or image above --max-pixels"),
            (415, "unsupported content type"),
            (422, "not an image, or a setting out of range"),
            (502, "the image URL's server answered 5xx, could not be reached, or dropped the connection"),
            (
                503,
                "queue full, as many URLs being fetched as the server fetches at once, or --timeout passed "
                "(Retry-After says when to retry)",
            ),
            (504, "the image URL's server did not answer within the URL timeout"),
        )
    },
}
