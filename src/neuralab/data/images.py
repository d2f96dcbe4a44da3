"""Reading one image file the way every neuralab image path does (folders, predict, serve):
EXIF rotation applied, transparency composited onto white, converted to L or RGB, resized."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from neuralab.data.dataset import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
# Pillow modes with one luminance band (alpha aside): a folder of only these loads as 1 channel.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# Pillow's BILINEAR widens its kernel when shrinking (an antialiased filter, not point sampling).
# reducing_gap=3 first box-reduces by an integer factor; Pillow documents gaps >= 3 as
# indistinguishable from the direct filter, and it is much faster on large photos.
RESAMPLE = Image.Resampling.BILINEAR
REDUCING_GAP = 3.0
EXIF_ORIENTATION = 0x0112  # EXIF tag number; 1 means "stored upright"


class BadImageFile(DataError):
    """An image file Pillow cannot read; `path` and `reason` say which and why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"cannot read image {path}: {reason}. Expected a readable JPEG, PNG, BMP or WebP "
            "file; replace or delete it"
        )
        self.path, self.reason = path, reason


def load_image_file(
    path: str | Path, channels: int, image_size: int | Sequence[int]
) -> torch.Tensor:
    """Read one image exactly as `folder` reads training images.

    EXIF rotation is applied, transparency is composited onto white, the image is converted
    to L (channels=1) or RGB (channels=3) and resized (BILINEAR, reducing_gap=3) to image_size.

    Returns:
        uint8 tensor (channels, height, width).

    Raises:
        BadImageFile (a DataError) naming the file when Pillow cannot read it.
    """
    file, size = Path(path), _image_size(image_size)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    with _pillow_errors(file):
        with _open(file) as image:
            image.verify()  # checks what decoding does not (e.g. PNG chunk checksums)
        with _open(file) as image:  # verify() leaves the image unusable: open again
            return prepare_pil_image(image, channels, size)


def prepare_pil_image(
    image: Image.Image, channels: int, image_size: int | Sequence[int]
) -> torch.Tensor:
    """An open PIL image → uint8 (channels, height, width), prepared as training images are."""
    size = _image_size(image_size)
    picture = _prepare(image, channels, size)
    array = np.array(picture, dtype=np.uint8).reshape(size[0], size[1], channels)  # (H, W, C)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (C, H, W)


def image_mode(path: Path) -> str:
    """Pillow's mode of an image file ("RGB", "L", ...), reading only its header."""
    with _pillow_errors(path), _open(path) as image:
        return image.mode


@contextmanager
def _pillow_errors(path: Path) -> Iterator[None]:
    """Turn what Pillow raises on a bad file, decompression bombs included, into BadImageFile."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImageFile(
            path,
            f"refused by Pillow's decompression-bomb guard ({error}); "
            "if the file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS",
        ) from None
    except UnidentifiedImageError:
        raise BadImageFile(
            path, "not an image Pillow can decode (unrecognised or corrupt contents)"
        ) from None
    except Exception as error:  # decoders raise many types (OSError, SyntaxError, ...)
        raise BadImageFile(path, f"{type(error).__name__}: {error}") from None


def _open(file: Path) -> Image.Image:
    """Image.open, refusing images over Image.MAX_IMAGE_PIXELS.

    Pillow itself only warns between that limit and twice it (and raises above); checking
    here rather than turning the warning into an error keeps this thread-safe
    (warnings.catch_warnings is process-global).
    """
    image = Image.open(file)
    pixels, limit = image.width * image.height, Image.MAX_IMAGE_PIXELS
    if limit and pixels > limit:
        image.close()
        raise Image.DecompressionBombError(
            f"{image.width}x{image.height} = {pixels} pixels, over Image.MAX_IMAGE_PIXELS = {limit}"
        )
    return image


def _prepare(image: Image.Image, channels: int, size: tuple[int, int]) -> Image.Image:
    """Upright, opaque, L or RGB, resized to size (height, width)."""
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # phone photos store rotation in EXIF
        image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size[1], size[0]):  # Pillow sizes are (width, height)
        image = image.resize((size[1], size[0]), RESAMPLE, reducing_gap=REDUCING_GAP)
    return image


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """64 → (64, 64); (48, 64) → (48, 64) as (height, width)."""
    size = (
        (image_size, image_size)
        if isinstance(image_size, int)
        else tuple(image_size)
        if isinstance(image_size, (tuple, list))
        else ()
    )
    if len(size) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size
    ):
        raise DataError(
            f"image_size must be a positive int or (height, width), "
            f"got {image_size!r}; e.g. image_size=64"
        )
    return size
