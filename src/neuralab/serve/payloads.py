"""Request bodies of the prediction server → model inputs, with a 4xx reason for anything wrong.

`/predict` takes images as multipart file uploads or as base64 strings in JSON
(`{"image": ...}` / `{"images": [...]}`, data URLs welcome: the web page sends its canvas that
way), and texts as JSON (`{"text": ...}` / `{"texts": [...]}`). Images are decoded and resized
exactly as training images were (the run's modality). The event loop only receives a body's
bytes: parsing (JSON, multipart) and decoding run in a thread pool (`read_inputs`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
from concurrent.futures import Executor

import torch
from PIL import Image, UnidentifiedImageError

from neuralab.inference.predict import Predictor
from neuralab.serve.multipart import MultipartError, Part, parse_multipart

# Most pixels an uploaded image may decode to: 40 megapixels covers phone photos while keeping
# one decoded RGB image under ~120 MB (Pillow's own guard allows ~90 megapixels).
MAX_PIXELS = 40_000_000
TEXT_FIELDS, IMAGE_FIELDS = ("text", "texts"), ("image", "images")


class PayloadError(Exception):
    """A request the server understands but cannot predict: 422 (or `status`) with the reason."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.status = status


def is_text_model(predictor: Predictor) -> bool:
    return predictor.modality.kind == "text"


def parse_json(body: bytes) -> dict:
    """The JSON object of a request body."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PayloadError(f"the body is not valid JSON ({error})") from None
    if not isinstance(payload, dict):
        raise PayloadError(
            f'expected a JSON object such as {{"text": ...}}, got {type(payload).__name__}'
        )
    return payload


def json_items(payload: dict, text_model: bool, max_items: int) -> tuple[str, list]:
    """The (field, values) of a JSON payload: exactly one of text/texts (text models) or
    image/images (image models), each value a string, at most `max_items` of them."""
    fields = TEXT_FIELDS if text_model else IMAGE_FIELDS
    kind = "texts" if text_model else "images"
    unknown = sorted(set(payload) - set(fields))
    given = [name for name in fields if name in payload]
    if unknown or len(given) != 1:
        found = f"fields {sorted(payload)}" if payload else "an empty object"
        raise PayloadError(
            f"this model classifies {kind}: send exactly one of the fields "
            f"{fields[0]!r} (a string) or {fields[1]!r} (a list of strings); got {found}"
        )
    field = given[0]
    values = payload[field] if field.endswith("s") else [payload[field]]
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise PayloadError(f"field {field!r} must hold {'a list of ' * field.endswith('s')}strings")
    check_count(len(values), max_items)
    return field, values


def check_count(count: int, max_items: int) -> None:
    if count == 0:
        raise PayloadError("nothing to predict: the request holds no inputs")
    if count > max_items:
        raise PayloadError(
            f"too many inputs in one request: {count}, at most {max_items} (--max-items); "
            "split them over several requests"
        )


def clean_texts(texts: list[str], field: str) -> list[str]:
    """The texts, refusing empty ones (a model has nothing to go on)."""
    for index, text in enumerate(texts):
        if not text.strip():
            where = field if field == "text" else f"{field}[{index}]"
            raise PayloadError(f"{where} is empty; send at least one word")
    return texts


def decode_base64(value: str, where: str) -> bytes:
    """Bytes of a base64 string or a `data:image/png;base64,...` URL."""
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(
            f"{where} is not valid base64; send the image file's bytes base64-encoded "
            "(or a data: URL), or upload the file as multipart/form-data"
        ) from None


def decode_image(data: bytes, where: str, predictor: Predictor) -> torch.Tensor:
    """Image file bytes → uint8 (C, H, W) at the model's size, prepared as in training."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise PayloadError(
                    f"{where} is {image.width}x{image.height} pixels, over the server's limit of "
                    f"{MAX_PIXELS}; downscale it before sending"
                )
            return predictor.modality.prepare(image)
    except PayloadError:
        raise
    except UnidentifiedImageError:
        raise PayloadError(
            f"{where} is not an image Pillow can decode (unrecognised or corrupt contents); "
            "send a PNG, JPEG, BMP or WebP file"
        ) from None
    except Exception as error:  # Pillow's decoders raise many types (OSError, SyntaxError, ...)
        raise PayloadError(
            f"{where} is not an image Pillow can read ({type(error).__name__}: {error}); "
            "send a PNG, JPEG, BMP or WebP file"
        ) from None


def decode_images(blobs: list[tuple[str, bytes]], predictor: Predictor) -> list[torch.Tensor]:
    """(where, file bytes) pairs → model-ready uint8 tensors; the first bad one raises."""
    return [decode_image(data, where, predictor) for where, data in blobs]


def json_image_blobs(field: str, values: list[str]) -> list[tuple[str, bytes]]:
    """Base64 values of JSON field image/images → (where, bytes) pairs."""
    wheres = [field] if field == "image" else [f"{field}[{i}]" for i in range(len(values))]
    return [
        (where, decode_base64(value, where)) for where, value in zip(wheres, values, strict=True)
    ]


def form_image_blobs(parts: list[Part], max_items: int) -> list[tuple[str, bytes]]:
    """Uploaded files of a multipart form → (where, bytes) pairs; any field name is accepted."""
    uploads = [part for part in parts if part.filename is not None]
    if not uploads:
        names = sorted({part.name for part in parts})
        raise PayloadError(
            f"the multipart body holds no file (fields: {names or 'none'}); upload the image as "
            "a file, e.g. `curl -F file=@digit.png URL/predict`"
        )
    check_count(len(uploads), max_items)
    return [(f"file {part.filename or part.name!r}", bytes(part.data)) for part in uploads]


def multipart_blobs(body: bytes, content_type: str, max_items: int) -> list[tuple[str, bytes]]:
    """The uploaded files of a multipart/form-data body, as (where, bytes) pairs."""
    try:  # one file more than allowed, so that check_count names the real limit
        parts = parse_multipart(body, content_type, max_files=max_items + 1)
    except MultipartError as error:
        raise PayloadError(f"bad multipart body: {error}") from None
    return form_image_blobs(parts, max_items)


def body_kind(content_type: str) -> str:
    """ "multipart" or "json" from a Content-Type header, else 415 naming both."""
    if content_type.startswith("multipart/form-data"):
        return "multipart"
    if content_type.startswith("application/json"):
        return "json"
    raise PayloadError(
        f"unsupported Content-Type {content_type or 'none'!r}: send application/json "
        "or multipart/form-data",
        status=415,
    )


def parse_inputs(body: bytes, content_type: str, predictor: Predictor, max_items: int) -> list:
    """A whole request body → texts, or decoded uint8 (C, H, W) images (CPU work: the server
    runs it in its preparation threads, never on the event loop).

    Texts stay strings here: the forward pass tokenises each batch in one call.
    """
    text_model = is_text_model(predictor)
    if body_kind(content_type) == "multipart":
        if text_model:
            raise PayloadError('this model classifies texts: send JSON {"text": "..."}')
        blobs = multipart_blobs(body, content_type, max_items)
    else:
        field, values = json_items(parse_json(body), text_model, max_items)
        if text_model:
            return clean_texts(values, field)
        blobs = json_image_blobs(field, values)
    return decode_images(blobs, predictor)


async def read_inputs(request, predictor: Predictor, max_items: int, pool: Executor) -> list:
    """Texts, or decoded uint8 (C, H, W) images, from a JSON or multipart request body.

    The event loop only receives the body's bytes; parsing and decoding run in `pool`.
    """
    content_type = request.headers.get("content-type", "")
    body_kind(content_type)  # a 415 before the body is read
    body = await request.body()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, parse_inputs, body, content_type, predictor, max_items)
