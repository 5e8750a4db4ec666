"""Safe lookup and loading of post images.

Image ids come from data files that users download from the internet, and the images themselves
are scraped from social media: some are missing, truncated, not images at all, PNGs saved under a
``.jpg`` name, or (in the worst case) decompression bombs. Loading must never crash a training run
or a prediction over thousands of posts, so every outcome is reported as an :class:`ImageStatus`
and counted, and only an id that tries to escape the image folder is an error.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import io
import stat as stat_module
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image, ImageOps

from smner.errors import SmnerError

# Formats seen on social media. Others (EPS, which shells out to Ghostscript; PSD; DDS; ...) are
# refused rather than handed to a rarely exercised decoder.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG covers MPO


class ImageStatus(enum.StrEnum):
    """What happened when a post's image was looked up; the value is the wording of summaries."""

    OK = "ok"
    #: the post came without an image
    NO_IMAGE = "no image"
    #: the post has an image, but the model is text-only and never looks at it
    IGNORED = "ignored (text-only model)"
    MISSING = "missing"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    TOO_LARGE = "too large"


@dataclass(frozen=True)
class ImageLimits:
    """Upper bounds checked before decoding, so one hostile file cannot exhaust memory."""

    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    #: when set, large images are decoded at reduced size (JPEG DCT scaling, then an integer
    #: box reduction) down to no less than this many pixels on their shorter side, so that
    #: their full-size copies never pile up; the server sets it from the model's input size
    decode_side: int | None = None


DEFAULT_LIMITS = ImageLimits()


class UnsafeImageIdError(SmnerError):
    """An image id that would name a file outside the image folder."""


def _refuse(image_id: str, reason: str) -> UnsafeImageIdError:
    return UnsafeImageIdError(f"unsafe image id {image_id!r}: {reason}")


def check_image_id(image_id: str) -> None:
    """Raise :class:`UnsafeImageIdError` unless ``image_id`` is a plain file name.

    Ids are untrusted input: empty ids, ``/``, ``\\``, NUL bytes, ``.``, ``..`` and drive or
    absolute paths are refused. The data reader applies this rule when it reads a file, so a
    broken id is reported with its line rather than when its image is first looked up.
    """
    if not image_id:
        raise _refuse(image_id, "it is empty")
    if any(char in image_id for char in ("/", "\\", "\x00")):
        raise _refuse(image_id, "it contains a path separator or NUL byte")
    if image_id in (".", ".."):
        raise _refuse(image_id, "it names a folder")
    if PurePosixPath(image_id).is_absolute() or PureWindowsPath(image_id).drive:
        raise _refuse(image_id, "it is an absolute path")


def resolve_image_path(image_dir: Path, image_id: str, suffix: str = ".jpg") -> Path:
    """Return ``<image_dir>/<image_id><suffix>``, refusing ids that could leave ``image_dir``.

    Besides the ids :func:`check_image_id` refuses, a name that is a symlink pointing outside
    ``image_dir`` is refused. An id that already ends with ``suffix`` is not given it twice.
    """
    check_image_id(image_id)
    name = image_id if image_id.endswith(suffix) else image_id + suffix
    path = Path(image_dir) / name
    root = Path(image_dir).resolve()
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError):
        # A symlink loop (RuntimeError before Python 3.13): it names no file at all, so it
        # cannot leave the folder; reading it fails and the image counts as unreadable.
        return path
    if not resolved.is_relative_to(root):
        raise _refuse(image_id, f"it resolves to a file outside {str(root)!r}")
    return path


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone (nothing is decoded); None if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                return image.size
    except Exception:  # see load_image_bytes: malformed input raises many types
        return None


def load_image_bytes(
    data: bytes, limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[Image.Image | None, ImageStatus]:
    """Decode ``data`` into an RGB image, or say why not; never raises for bad image data.

    The format comes from the bytes, not from a file name. The pixel count is checked from the
    header before any pixel is decoded, so a small file that expands to gigabytes is refused.
    """
    if len(data) > limits.max_bytes:
        return None, ImageStatus.TOO_LARGE
    if not data:
        return None, ImageStatus.UNREADABLE
    try:
        # Scoped, not global: PIL's own bomb warning becomes an error only inside this block.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > limits.max_pixels:
                    return None, ImageStatus.TOO_LARGE
                if limits.decode_side and image.format == "JPEG":
                    factor = min(width, height) // limits.decode_side
                    if factor >= 2:  # the DCT decodes at 1/2, 1/4 or 1/8 of the size
                        image.draft("RGB", (width // factor, height // factor))
                image.load()
                return _to_rgb(_reduced(image, limits.decode_side)), ImageStatus.OK
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, ImageStatus.TOO_LARGE
    except OSError as error:
        if "truncated" in str(error).lower():
            return None, ImageStatus.TRUNCATED
        return None, ImageStatus.UNREADABLE
    except Exception:
        # PIL's decoders raise many exception types on malformed input (SyntaxError, ValueError,
        # struct.error, IndexError, ...); all of them mean "not a usable image".
        return None, ImageStatus.UNREADABLE


_STRIP_PIXELS = 1 << 20
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "I", "F", "I;16", "CMYK")


def _reduced(image: Image.Image, side: int | None) -> Image.Image:
    """``image`` box-reduced by the largest integer factor keeping its shorter side >= ``side``.

    The preprocessing resamples with ``reducing_gap=3``, which reduces by such a factor
    first anyway; doing it here frees the full-size pixels before anything else is copied.
    """
    if not side:
        return image
    factor = min(image.size) // side
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE:
        image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    # Strip by strip (reducing RGBA makes a premultiplied full-size copy otherwise); strips
    # are whole multiples of the factor, so the result equals one reduction of the image.
    width, height = image.size
    out_w, out_h = width // factor, height // factor
    result = Image.new(image.mode, (out_w, out_h))
    rows = max(1, _STRIP_PIXELS // max(width * factor, 1)) * factor
    for top in range(0, out_h * factor, rows):
        bottom = min(top + rows, out_h * factor)
        strip = image.crop((0, top, out_w * factor, bottom)).reduce(factor)
        result.paste(strip, (0, top // factor))
    return result


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB copy; transparent areas become white, as the post was shown on a page.

    Compositing pastes the image onto white through its alpha channel: one RGB image and
    one alpha band, not the three full-size RGBA copies of ``alpha_composite``.
    """
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose a good image
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = _wide_grey_to_8bit(image)
    if not _has_alpha(image):
        return image.convert("RGB")
    # Strip by strip: the only full-size copy made is the RGB result.
    width, height = image.size
    result = Image.new("RGB", image.size, (255, 255, 255))
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(top + rows, height))).convert("RGBA")
        result.paste(strip.convert("RGB"), (0, top), mask=strip.getchannel("A"))
    return result


def _wide_grey_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit) grey scaled to 8 bits; a plain ``convert`` clips it, so nearly every
    pixel of a 16-bit photo came out white."""
    import numpy as np

    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        scale = 65535.0
    else:  # "I" (16-bit PNGs open as "I" in older Pillow) or "F": their own range
        scale = 65535.0 if float(values.max(initial=0)) > 255 else 255.0
    scaled = np.clip(values.astype(np.float32) * (255.0 / scale), 0, 255).round()
    return Image.fromarray(scaled.astype(np.uint8))  # 2-D uint8: mode "L"


def read_image_file(
    path: Path, limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[bytes | None, ImageStatus]:
    """The bytes of an image file, checking existence and size before reading it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None, ImageStatus.MISSING
    except OSError:
        return None, ImageStatus.UNREADABLE
    if not stat_module.S_ISREG(stat.st_mode):
        return None, ImageStatus.UNREADABLE
    if stat.st_size > limits.max_bytes:
        return None, ImageStatus.TOO_LARGE
    try:
        with open(path, "rb") as handle:
            data = handle.read(limits.max_bytes + 1)  # the file may grow after stat()
    except FileNotFoundError:
        return None, ImageStatus.MISSING
    except OSError:
        return None, ImageStatus.UNREADABLE
    if len(data) > limits.max_bytes:
        return None, ImageStatus.TOO_LARGE
    return data, ImageStatus.OK


def load_image_file(
    path: Path, limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[Image.Image | None, ImageStatus]:
    """Decode the image file at ``path`` (see :func:`load_image_bytes`); MISSING if absent."""
    data, status = read_image_file(Path(path), limits)
    if data is None:
        return None, status
    return load_image_bytes(data, limits)


_SUMMARY_ORDER: tuple[tuple[ImageStatus, str], ...] = (
    (ImageStatus.MISSING, "missing"),
    (ImageStatus.UNREADABLE, "unreadable"),
    (ImageStatus.TRUNCATED, "truncated"),
    (ImageStatus.TOO_LARGE, "too large"),
)


class ImageStore:
    """Images of a data set's posts, by id, with a tally of what each lookup found.

    The tally lets a command end with one line on how many images were usable, instead of one
    warning per bad image. It counts lookups, so a post's image looked up twice counts twice.
    """

    def __init__(
        self,
        image_dir: Path | str | None,
        limits: ImageLimits = DEFAULT_LIMITS,
        suffix: str = ".jpg",
    ) -> None:
        self.image_dir = Path(image_dir) if image_dir is not None else None
        if self.image_dir is not None and not self.image_dir.is_dir():
            problem = "is not a folder" if self.image_dir.exists() else "does not exist"
            raise SmnerError(f"image folder {self.image_dir} {problem}")
        self.limits = limits
        self.suffix = suffix
        self.counts: collections.Counter[ImageStatus] = collections.Counter()
        self.without_id = 0

    def path_for(self, image_id: str | None) -> Path | None:
        """The file for ``image_id``; None without a folder or an id. Raises for unsafe ids."""
        if self.image_dir is None or image_id is None:
            return None
        return resolve_image_path(self.image_dir, image_id, self.suffix)

    def read_bytes(self, image_id: str) -> tuple[bytes | None, ImageStatus]:
        """The raw bytes of an image, without counting (callers record the final outcome)."""
        path = self.path_for(image_id)
        if path is None:
            return None, ImageStatus.MISSING
        return read_image_file(path, self.limits)

    def record(self, status: ImageStatus | None, times: int = 1) -> None:
        """Count ``times`` lookups that ended in ``status``; None means "post had no image id"."""
        if status is None:
            self.without_id += times
        else:
            self.counts[status] += times

    def load(
        self, image_id: str | None, count: bool = True
    ) -> tuple[Image.Image | None, ImageStatus]:
        """Load one post's image, counted unless ``count`` is false (e.g. a second epoch's read).

        Without a folder configured every image is missing.

        Raises UnsafeImageIdError for an id that escapes the folder: that is a broken or hostile
        data file, not a missing image.
        """
        if image_id is None:
            if count:
                self.record(None)
            return None, ImageStatus.MISSING
        data, status = self.read_bytes(image_id)
        image = None
        if data is not None:
            image, status = load_image_bytes(data, self.limits)
        if count:
            self.record(status)
        return image, status

    def summary(self) -> str:
        """One line such as ``images: 120 loaded, 3 missing, 2 posts without an image id``."""
        parts = [f"{self.counts[ImageStatus.OK]} loaded"]
        parts += [f"{self.counts[s]} {word}" for s, word in _SUMMARY_ORDER if self.counts[s]]
        if self.without_id:
            noun = "post" if self.without_id == 1 else "posts"
            parts.append(f"{self.without_id} {noun} without an image id")
        return "images: " + ", ".join(parts)
