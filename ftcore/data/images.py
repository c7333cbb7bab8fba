"""Decode one image file to an upright RGB uint8 array, whatever its pixel format.

Every file is decoded from its bytes, never judged by its suffix. What a
conversion changes is returned as notes, so that the audit can say it:

- transparency (RGBA, LA, PA, palette or greyscale/RGB with a transparent
  colour) is composited on white, :data:`BACKGROUND`;
- 16-bit greyscale is scaled by 1/257 (65535 becomes 255), 32-bit integer and
  float images by their range (floats in [0, 1] as fractions of white), never
  clipped;
- CMYK is converted with Pillow's formula (no colour profile applied);
- of an animated GIF or WebP the first frame is used;
- 1-bit, greyscale and palette images become RGB without loss.

Formats: whatever Pillow reads (JPEG, PNG, BMP, GIF, WebP, TIFF, AVIF when
Pillow is built with libavif) plus HEIC/HEIF through the ``pillow-heif``
plugin when it is installed; without it such files are named as unsupported.

Decompression bombs: an image with more pixels than Pillow's
``Image.MAX_IMAGE_PIXELS`` (89,478,485 by default) is refused before its
pixels are decoded, except a JPEG, which libjpeg decodes at 1/2, 1/4 or 1/8
scale when that brings it under the limit. Memory stays bounded either way.
"""

from __future__ import annotations

import io
import math
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from ftcore.core.errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "BACKGROUND", "HEIF_SUPPORTED", "AVIF_SUPPORTED", "MAX_FILE_BYTES",
           "ImageDecodeError", "Decoded", "decode_bytes", "decode_image", "read_and_decode"]

try:  # HEIC/HEIF: phone photos. pillow-heif registers a Pillow opener.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the install
    HEIF_SUPPORTED = False
#: Pillow 11.2 and later decode AVIF when built with libavif (the PyPI wheels are).
AVIF_SUPPORTED = bool(features.check("avif"))

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                            ".heic", ".heif", ".avif"})
#: Colour that transparent pixels are composited on (white, as browsers show an image on a page).
BACKGROUND = (255, 255, 255)
#: Files larger than this (256 MiB) are not read into memory; no photo of a training set is that large.
MAX_FILE_BYTES = 256 * 1024**2
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"II*\x00", "TIFF"),
          (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


class ImageDecodeError(DatasetError):
    """A file that cannot be used as an image.

    Attributes
    ----------
    kind : str
        ``"not_image"``, ``"unreadable"`` (empty, truncated or corrupt),
        ``"unsupported"`` (no decoder for the format) or
        ``"huge_image"`` (over the decompression-bomb limit).
    reason : str
        Why, without the file name.
    """

    def __init__(self, kind: str, name: str, reason: str) -> None:
        super().__init__(f"cannot read image {name}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass
class Decoded:
    """One decoded image.

    Attributes
    ----------
    array : numpy.ndarray of uint8, shape (height, width, 3)
        Upright RGB, downscaled when asked.
    format : str
        Pillow's format name (``"JPEG"``, ``"PNG"``, ``"HEIF"``...).
    mode : str
        The file's pixel mode before conversion (``"RGBA"``, ``"I;16"``...).
    size : tuple of int
        The file's (width, height) in pixels, before orientation and scaling.
    notes : list of (str, str, str)
        ``(kind, message, action)`` for each conversion that changed or
        dropped information (kinds ``"converted"`` and ``"huge_image"``).
    """

    array: np.ndarray
    format: str
    mode: str
    size: tuple[int, int]
    notes: list[tuple[str, str, str]] = field(default_factory=list)


def decode_bytes(data: bytes, name: str = "image", max_short_side: int | None = None) -> Decoded:
    """Decode an image file's content to upright RGB.

    Parameters
    ----------
    data : bytes
        The whole file.
    name : str, default "image"
        The file's path, for messages.
    max_short_side : int or None, default None
        When given, an image whose shorter side is larger is downscaled
        (bicubic, aspect kept) so that it equals this many pixels; JPEGs are
        decoded at a reduced DCT scale first (``Image.draft``).

    Returns
    -------
    Decoded

    Raises
    ------
    ImageDecodeError
        With ``kind`` saying why (see :class:`ImageDecodeError`).
    """
    if not data:
        raise ImageDecodeError("unreadable", name, "the file is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise ImageDecodeError("huge_image", name, f"{e}; refused before decoding. Downscale it (e.g. to 4,000 "
                                   "pixels on the longer side) and add it again.") from e
        except UnidentifiedImageError as e:
            raise _unidentified(data, name) from e
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise ImageDecodeError("unreadable", name, f"its header cannot be read ({e})") from e
        try:
            with im:
                return _convert(im, name, max_short_side)
        except ImageDecodeError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
            reason = f"{im.format or 'the'} data is corrupt or truncated ({e})"
            raise ImageDecodeError("unreadable", name, reason) from e


def _unidentified(data: bytes, name: str) -> ImageDecodeError:
    brand = data[8:12] if data[4:8] == b"ftyp" else b""
    if brand in _HEIF_BRANDS:
        return ImageDecodeError("unsupported", name, "HEIC/HEIF image, and no HEIF decoder is installed; install "
                                "pillow-heif (pip install pillow-heif) or convert it to JPEG")
    if brand in _AVIF_BRANDS:
        return ImageDecodeError("unsupported", name, "AVIF image, and this Pillow has no AVIF decoder; install "
                                "Pillow 11.2 or later, or convert it to JPEG")
    fmt = next((f for magic, f in _MAGIC if data.startswith(magic)), None)
    if fmt:
        return ImageDecodeError("unreadable", name, f"it starts like a {fmt} file but its header is corrupt")
    suffix = Path(name).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ImageDecodeError("not_image", name, f"the name ends in '{suffix}' but the content is no image format "
                                f"Pillow knows (it starts with {data[:8]!r})")
    return ImageDecodeError("not_image", name, "not an image: no image format Pillow knows was found in its content")


def _convert(im: Image.Image, name: str, max_short_side: int | None) -> Decoded:
    fmt, mode, (w, h) = im.format or "?", im.mode, im.size
    notes: list[tuple[str, str, str]] = []
    limit = Image.MAX_IMAGE_PIXELS
    if limit and w * h > limit:
        k = next((k for k in range(1, 4) if (w >> k) * (h >> k) <= limit), None) if fmt == "JPEG" else None
        if k is None:
            raise ImageDecodeError("huge_image", name, f"{w}x{h} = {w * h:,} pixels is over the decompression-bomb "
                                   f"limit of {limit:,} pixels and {fmt} cannot be decoded at a reduced scale; "
                                   "refused. Downscale it (e.g. to 4,000 pixels on the longer side) and add it again.")
        im.draft("RGB", (w >> k, h >> k))
        notes.append(("huge_image", f"{w}x{h} = {w * h:,} pixels is over the {limit:,}-pixel limit; decoded at "
                      f"1/{2 ** k} scale ({im.size[0]}x{im.size[1]})", "downscaled"))
    elif max_short_side is not None and fmt == "JPEG" and min(w, h) > max_short_side:
        f = max_short_side / min(w, h)  # libjpeg decodes at 1/2, 1/4 or 1/8, never below the target
        im.draft("RGB", (math.ceil(w * f), math.ceil(h * f)))
    n_frames = getattr(im, "n_frames", 1)
    if n_frames > 1:
        im.seek(0)
        notes.append(("converted", f"animated {fmt} with {n_frames} frames: the first frame is used", "converted"))
    im = ImageOps.exif_transpose(im)  # loads the pixels: truncation and corruption show here
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        im = im.convert("RGBA")
        if im.getextrema()[3][0] < 255:
            notes.append(("converted", f"{mode} with transparency: composited on white {BACKGROUND}", "converted"))
        bg = Image.new("RGBA", im.size, BACKGROUND + (255,))
        im = Image.alpha_composite(bg, im)
    elif im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im, how = _to_8bit(im)
        if how:
            notes.append(("converted", f"{mode} ({_DEPTH.get(mode, 'high bit depth')}) {how}", "converted"))
    elif im.mode == "CMYK":
        notes.append(("converted", "CMYK converted to RGB (Pillow's formula; any colour profile is not applied)",
                      "converted"))
    if im.mode != "RGB":
        im = im.convert("RGB")
    if max_short_side is not None and min(im.size) > max_short_side:
        s = max_short_side / min(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BICUBIC, reducing_gap=3.0)
    return Decoded(np.asarray(im, dtype=np.uint8).copy(), fmt, mode, (w, h), notes)


_DEPTH = {"I": "32-bit integer", "F": "32-bit float", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit",
          "I;16N": "16-bit"}


def _to_8bit(im: Image.Image) -> tuple[Image.Image, str]:
    """Scale 16-bit, 32-bit integer and float greyscale to 8 bits instead of clipping.

    16-bit data is divided by 257 (65535 -> 255); 32-bit integers and floats
    are scaled by their range when it exceeds 0-255 (floats in [0, 1] are
    taken as fractions of white). Returns the image and what was done ("" if
    the values were already 0-255 integers).
    """
    arr = np.asarray(im, dtype=np.float64)
    how = ""
    if im.mode.startswith("I;16"):
        arr = arr / 257.0
        how = "scaled to 8 bits (value / 257)"
    else:
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            arr = arr * 255.0
            how = "scaled from [0, 1] to 8 bits"
        elif lo < 0.0 or hi > 255.0:
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
            how = f"scaled from its range [{lo:g}, {hi:g}] to 8 bits"
        elif im.mode == "F":
            how = "rounded to 8 bits"
    return Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)), how


def read_and_decode(path: str | Path, max_short_side: int | None = None) -> tuple[bytes, Decoded]:
    """Read a file once and decode it.

    Returns
    -------
    data : bytes
        The file's content (for hashing).
    decoded : Decoded

    Raises
    ------
    ImageDecodeError
        As :func:`decode_bytes`; also for a file over :data:`MAX_FILE_BYTES`.
    OSError
        If the file cannot be read.
    """
    name = str(path)
    st = Path(path).stat()
    if not stat.S_ISREG(st.st_mode):  # a pipe or device would block or never end
        raise ImageDecodeError("not_image", name, "is not a regular file (a pipe, device or socket); left out")
    size = st.st_size
    if size > MAX_FILE_BYTES:
        try:  # only the header: what is it?
            with Image.open(path) as im:
                what = f"a {im.format} image of {im.size[0]}x{im.size[1]} pixels"
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            raise ImageDecodeError("not_image", name, f"{size / 1024**2:.0f} MiB and not an image") from None
        raise ImageDecodeError("huge_image", name, f"{what} in {size / 1024**2:.0f} MiB, over the "
                               f"{MAX_FILE_BYTES // 1024**2} MiB per-file cap; refused. Save it smaller.")
    with open(path, "rb") as fh:
        data = fh.read()
    return data, decode_bytes(data, name, max_short_side)


def decode_image(path: str | Path, max_short_side: int | None = None) -> np.ndarray:
    """Decode one image file to an RGB uint8 array, upright.

    Parameters
    ----------
    path : str or pathlib.Path
        Image file.
    max_short_side : int or None, default None
        When given, images whose shorter side is larger are downscaled
        (bicubic, aspect kept) so that it equals this many pixels.

    Returns
    -------
    numpy.ndarray of uint8, shape (height, width, 3)

    Raises
    ------
    DatasetError
        Naming the file, if it cannot be decoded (an :class:`ImageDecodeError`
        says why in ``kind``).
    """
    try:
        return read_and_decode(path, max_short_side)[1].array
    except OSError as e:
        raise ImageDecodeError("unreadable", str(path), f"the file cannot be read ({e.strerror or e})") from e

