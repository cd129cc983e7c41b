"""The output formats (PNG, JPEG, WebP): encoding with the generation parameters embedded, and
one reader for the parameters of all three.

PNG keeps its `parameters` tEXt chunk (storage/png.py). JPEG and WebP carry the same sorted JSON
in the EXIF ImageDescription tag (0x010E, ASCII), which exiftool, browsers' EXIF readers and
Pillow all show. Encoder settings are fixed and passed explicitly, so equal images and equal
parameters give equal bytes (a redelivery rewrites an identical object) whatever the defaults
of the installed Pillow.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Literal

from PIL import Image

from storage.png import DEFAULT_COMPRESS_LEVEL, PARAMETERS_CHUNK, encode_png, parameters_text

ImageFormat = Literal["png", "jpeg", "webp"]
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}
CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Used when a lossy format is asked for without a quality (the request schema's default too).
DEFAULT_QUALITY = 90
# EXIF ImageDescription: an ASCII tag that every EXIF reader shows.
PARAMETERS_EXIF_TAG = 0x010E
# A JPEG marker segment holds at most 65,535 bytes, its length field included (Pillow's limit).
_MAX_JPEG_EXIF_BYTES = 65533
# libwebp's effort (0-6): 4 is its default; fixed here so bytes do not move with it.
_WEBP_METHOD = 4
# Replaces the prompts in a JPEG whose EXIF segment could not hold them (MAX_PROMPT_LENGTH raised
# far above its default): the rest of the parameters are still embedded.
PROMPTS_OMITTED_KEY = "prompts_omitted"


def content_type(image_format: str) -> str:
    """The media type of `image_format` ("image/png", "image/jpeg", "image/webp")."""
    return CONTENT_TYPES[image_format]


def extension(image_format: str) -> str:
    """The file extension of `image_format`, without a dot ("png", "jpg", "webp")."""
    return EXTENSIONS[image_format]


def encode_image(
    image: Image.Image,
    parameters: Mapping[str, object],
    image_format: str = "png",
    quality: int | None = None,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
) -> bytes:
    """`image` encoded as `image_format` with `parameters` embedded. `quality` (1-100, default
    DEFAULT_QUALITY) applies to jpeg and webp, `compress_level` to png; ValueError for an
    unknown format."""
    if image_format == "png":
        return encode_png(image, parameters, compress_level)
    quality = DEFAULT_QUALITY if quality is None else quality
    if image_format == "jpeg":
        return _encode_jpeg(image, parameters, quality)
    if image_format == "webp":
        return _encode_webp(image, parameters, quality)
    raise ValueError(f"unknown image format {image_format!r}")


def _encode_jpeg(image: Image.Image, parameters: Mapping[str, object], quality: int) -> bytes:
    exif = _exif(parameters_text(parameters))
    if len(exif) > _MAX_JPEG_EXIF_BYTES:
        exif = _exif(parameters_text(_without_prompts(parameters)))
    buffer = io.BytesIO()
    # JPEG has no alpha; the pipeline gives RGB anyway, this only guards other callers.
    rgb = image if image.mode in ("RGB", "L") else image.convert("RGB")
    rgb.save(
        buffer,
        format="JPEG",
        quality=quality,
        subsampling="4:2:0",
        optimize=False,
        progressive=False,
        exif=exif,
        comment=b"",  # else Pillow copies image.info["comment"] into the file
    )
    return buffer.getvalue()


def _encode_webp(image: Image.Image, parameters: Mapping[str, object], quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(
        buffer,
        format="WEBP",
        quality=quality,
        method=_WEBP_METHOD,
        lossless=False,
        exif=_exif(parameters_text(parameters)),
    )
    return buffer.getvalue()


def _exif(text: str) -> bytes:
    exif = Image.Exif()
    exif[PARAMETERS_EXIF_TAG] = text
    return exif.tobytes()


def _without_prompts(parameters: Mapping[str, object]) -> dict[str, object]:
    kept = {k: v for k, v in parameters.items() if k not in ("prompt", "negative_prompt")}
    return {**kept, PROMPTS_OMITTED_KEY: "too long for a JPEG EXIF segment"}


def read_image_parameters(data: bytes) -> dict[str, object]:
    """The parameters embedded by `encode_image` in a PNG, JPEG or WebP; {} when the image has
    none (or is another format). ValueError when the data is not an image or the embedded text
    is not a JSON object."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            text = _embedded_text(image)
    except (OSError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise ValueError(f"not a readable image: {exc}") from None
    if text is None:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("the embedded parameters are not a JSON object")
    return value


def _embedded_text(image: Image.Image) -> str | None:
    if image.format == "PNG":
        text = getattr(image, "text", {}).get(PARAMETERS_CHUNK)
        return text if isinstance(text, str) else None
    if image.format in ("JPEG", "WEBP"):
        value = image.getexif().get(PARAMETERS_EXIF_TAG)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return value if isinstance(value, str) else None
    return None


def format_of(data: bytes) -> str | None:
    """The format of encoded `data` by its signature: "png", "jpeg", "webp" or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None
