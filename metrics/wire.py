"""The metric service's wire format, version 1: JSON, no pickle, bounded before it is parsed.

Request (`POST /v1/score/<metric>`, `Content-Type: application/json`):

    {"version": 1, "request_id": "<client-chosen id, <= 128 chars>",
     "images": <one of the three forms below>,
     "prompts": ["...", ...] | null,
     "metadata": [{...}, ...] | null}

    images, as the client holds them, so the server scores exactly what an in-process call would:
      {"kind": "tensor", "shape": [B, 3, H, W], "data": "<base64 of B·3·H·W uint8, C order>"}
      {"kind": "rgb", "items": [{"size": [W, H], "data": "<base64 of H·W·3 uint8>"}, ...]}  (decoded PIL images)
      {"kind": "file", "items": ["<base64 of an image file>", ...]}  (decoded on the server by the metric's own
                                                                     `decode`, under the CLI's image limits)

Response: {"version": 1, "request_id": ..., "metric": ..., "values": [float | null, ...] (null = NaN),
           "details": [{...}, ...], "provenance": {...}, "served_by": {"replica": ..., "cached": bool}}

Errors: {"version": 1, "error": "<one line>", "status": 400 | 401 | 404 | 413 | 503}. A client never names a path:
no endpoint reads or writes a file. Limits: `PAINTBENCH_MAX_REQUEST_BYTES` (default 256 MiB) on the body,
`MAX_ITEMS` images per request, and the CLI's pixel and file-size caps on every image.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from paintbench.errors import InputError

WIRE_VERSION = 1
MAX_ITEMS = 4096
MAX_ID = 128


def max_request_bytes() -> int:
    return int(os.environ.get("PAINTBENCH_MAX_REQUEST_BYTES", str(256 * 2**20)))


@dataclass
class ScoreRequest:
    request_id: str
    images: Any                      # uint8 tensor [B,3,H,W], or a list of PIL images
    prompts: list[str] | None
    metadata: list[dict[str, Any]] | None
    kind: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise InputError(f"{what}: base64 text expected")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise InputError(f"{what}: not base64 ({e})") from None


# -- client side ------------------------------------------------------------------------------------------
def encode_images(images: Any) -> dict[str, Any]:
    """The wire form of what a provider's `score` accepts: a uint8 tensor, PIL images, or image files'
    bytes (`bytes` items). Float tensors and paths are not sent (convert first; paths stay client-side)."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"remote scoring sends uint8 [B, 3, H, W] tensors, got {images.dtype} {tuple(images.shape)}")
        return {"kind": "tensor", "shape": list(images.shape), "data": _b64(images.contiguous().cpu().numpy().tobytes())}
    items = list(images)
    if all(isinstance(x, (bytes, bytearray)) for x in items):
        return {"kind": "file", "items": [_b64(bytes(x)) for x in items]}
    from PIL import Image

    if all(isinstance(x, Image.Image) for x in items):
        from paintbench.metrics.images import load_image

        out = []
        for i, im in enumerate(items):
            rgb = load_image(im, name=f"#{i}")   # the normalisation an in-process call applies first
            out.append({"size": list(rgb.size), "data": _b64(rgb.tobytes())})
        return {"kind": "rgb", "items": out}
    raise InputError("remote scoring sends uint8 tensors, PIL images or image file bytes (read paths on the client)")


def encode_request(request_id: str, images: Any, prompts: list[str] | None,
                   metadata: list[dict[str, Any]] | None) -> bytes:
    return json.dumps({"version": WIRE_VERSION, "request_id": request_id, "images": encode_images(images),
                       "prompts": prompts, "metadata": metadata}, allow_nan=False).encode("utf-8")


def decode_response(body: bytes, source: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{source}: the answer is not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("version") != WIRE_VERSION:
        raise InputError(f"{source}: not a paintbench wire-v{WIRE_VERSION} answer")
    if "error" in doc:
        raise InputError(f"{source}: {doc['error']}")
    values, details = doc.get("values"), doc.get("details")
    if not isinstance(values, list) or not isinstance(details, list) or len(values) != len(details):
        raise InputError(f"{source}: values and details must be lists of one length")
    return doc


def values_tensor(values: list[Any]) -> torch.Tensor:
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)


# -- server side ------------------------------------------------------------------------------------------
def decode_request(body: bytes, decode_file: Any) -> ScoreRequest:
    """Parse and check a request body (already bounded by the caller). `decode_file(file_like)` turns an
    image file into what the metric's `decode` returns; raises `InputError` with one line on any fault."""
    from paintbench.metrics.images import check_size

    try:
        doc = json.loads(body, parse_constant=lambda c: (_ for _ in ()).throw(InputError(f"{c} is not allowed")))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"request is not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("version") != WIRE_VERSION:
        raise InputError(f"request must be a JSON object with version {WIRE_VERSION}")
    rid = doc.get("request_id")
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID:
        raise InputError(f"request_id must be a string of 1..{MAX_ID} characters")
    spec = doc.get("images")
    if not isinstance(spec, dict):
        raise InputError("images must be an object with a kind")
    kind = spec.get("kind")
    if kind == "tensor":
        shape = spec.get("shape")
        if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape)
                and shape[1] == 3 and shape[0] <= MAX_ITEMS):
            raise InputError(f"tensor shape must be [B <= {MAX_ITEMS}, 3, H, W], got {str(shape)[:80]}")
        check_size(shape[3], shape[2], "tensor images")
        raw = _unb64(spec.get("data"), "tensor data")
        if len(raw) != math.prod(shape):
            raise InputError(f"tensor data has {len(raw):,} bytes, shape {shape} needs {math.prod(shape):,}")
        images: Any = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(*shape)
        n = shape[0]
    elif kind in ("rgb", "file"):
        items = spec.get("items")
        if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
            raise InputError(f"images.items must be a list of 1..{MAX_ITEMS} images")
        images = [_rgb(it, i) for i, it in enumerate(items)] if kind == "rgb" else [
            decode_file(io.BytesIO(_unb64(it, f"image {i}"))) for i, it in enumerate(items)]
        n = len(items)
    else:
        raise InputError("images.kind must be tensor, rgb or file")
    prompts, metadata = doc.get("prompts"), doc.get("metadata")
    if prompts is not None and not (isinstance(prompts, list) and len(prompts) == n and all(isinstance(p, str) for p in prompts)):
        raise InputError(f"prompts must be null or a list of {n} strings")
    if metadata is not None and not (isinstance(metadata, list) and len(metadata) == n and all(isinstance(m, dict) for m in metadata)):
        raise InputError(f"metadata must be null or a list of {n} objects")
    return ScoreRequest(rid, images, prompts, metadata, kind)


def _rgb(item: Any, i: int):
    from PIL import Image

    from paintbench.metrics.images import check_size

    if not isinstance(item, dict):
        raise InputError(f"image {i}: an object with size and data expected")
    size = item.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(d, int) for d in size)):
        raise InputError(f"image {i}: size must be [W, H]")
    check_size(size[0], size[1], f"image {i}")
    raw = _unb64(item.get("data"), f"image {i}")
    if len(raw) != size[0] * size[1] * 3:
        raise InputError(f"image {i}: {len(raw):,} bytes for a {size[0]}x{size[1]} RGB image")
    return Image.frombytes("RGB", tuple(size), raw)


def encode_response(request_id: str, metric: str, values: torch.Tensor, details: list[dict[str, Any]],
                    provenance: dict[str, Any], served_by: dict[str, Any]) -> bytes:
    vals = [None if math.isnan(v) else v for v in values.float().cpu().tolist()]
    return json.dumps({"version": WIRE_VERSION, "request_id": request_id, "metric": metric, "values": vals,
                       "details": details, "provenance": provenance, "served_by": served_by},
                      default=str).encode("utf-8")


def encode_error(message: str, status: int) -> bytes:
    return json.dumps({"version": WIRE_VERSION, "error": message, "status": status}).encode("utf-8")
