"""Image files as models take them: float32 [C, H, W] pixels (0-255), grayscale (C 1) or RGB (C 3).

One decoder for training data (data.py's image folders) and for requests (the replica's `{"b64": ...}`
inputs), so what a model is served is what it was trained on. Pillow reads the files. An image stands
as viewers show it (a phone's EXIF orientation applied). A 16-bit image (a scan, a depth map) keeps its
precision, scaled to 0-255 without rounding, and a 32-bit integer or float one keeps its values: Pillow's
own conversion to 8 bits would clip them at 255 or 0.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable

import numpy as np

from orchestrator.errors import DataError

IMAGE_SUFFIXES = ("png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff")


def is_image_file(path: str) -> bool:
    return posixpath.splitext(path.lower())[1].lstrip(".") in IMAGE_SUFFIXES


# Pillow's modes of one channel beyond 8 bits, and the factor to 0-255 (None: the values as they are)
DEEP_MODES = {"I;16": 257, "I;16L": 257, "I;16B": 257, "I;16N": 257, "I": None, "F": None}
GRAY_MODES = ("1", "L", "LA", "La", *DEEP_MODES)  # Pillow's modes of one colour channel


def image_shape(raw: bytes, name: str) -> list[int]:
    """[C, H, W] of an image file as viewers show it: C 1 for a grayscale image, 3 for any other."""
    with _open_image(raw, name) as im:
        return [1 if im.mode in GRAY_MODES else 3, im.height, im.width]


def takes_images(shape) -> bool:
    return len(shape) == 3 and shape[0] in (1, 3)


def decode_image(raw: bytes, shape: list[int], name: str, resize: bool = True,
                 max_pixels: int | None = None) -> np.ndarray:
    """An image file's pixels as float32 [C, H, W] (0-255): in grayscale (C 1) or RGB (C 3), resized to
    H x W when `resize` (bilinear, with Pillow's antialiasing), else as large as it is. An image of more
    than `max_pixels` is refused before it is decoded (default: Pillow's own decompression-bomb limit)."""
    if not takes_images(shape):
        raise DataError(f"images take a shape [C, H, W] with C 1 (grayscale) or 3 (RGB), not {list(shape)}: set "
                        "data.feature_shape")
    # a JPEG to shrink is decoded at 1/2, 1/4 or 1/8 of its size where that still covers H x W (libjpeg's scaled
    # decoding, as Pillow's thumbnail does): a 500x375 photo to 64x64 decodes 3x faster, and is then resized as any
    draft = ("L" if shape[0] == 1 else "RGB", max(shape[1:])) if resize else None
    with _open_image(raw, name, max_pixels, draft) as im:
        deep = im.mode in DEEP_MODES
        scale = DEEP_MODES.get(im.mode)
        im = im.convert("F" if deep else "L" if shape[0] == 1 else "RGB")  # "F": 32-bit float, nothing clipped
        if resize and im.size != (shape[2], shape[1]):
            im = im.resize((shape[2], shape[1]))
        pixels = np.asarray(im, dtype=np.float32)
    if scale:
        pixels = pixels / scale
    if deep and shape[0] == 3:
        pixels = np.repeat(pixels[..., None], 3, axis=2)  # gray as RGB: the one channel three times
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


class UnreadableImage(DataError):
    """A file that is no image Pillow reads: empty, cut short, corrupt, or of another kind."""


# Of an image folder, the share of files that may be unreadable and left out (as the Kaggle cats and dogs folder's
# two empty JPEGs of 25,000): more says the data is wrong, and stops the run
UNREADABLE_SHARE = 0.01


def decode_images(files: list[tuple[Callable[[], bytes], str]], shape: list[int] | None, every_s: float = 5.0,
                  skip_unreadable: bool = False) -> tuple[np.ndarray, list[int]]:
    """[N, C, H, W] float32 of image files, `files` (a function that reads one's bytes, a name for messages) as
    training reads them: to `shape` [C, H, W] (data.feature_shape), converted and resized; else each as the first
    is, which every image must then match in size; and the indices of the files decoded. With `skip_unreadable`,
    files that are no image (UnreadableImage) are left out, and named, up to UNREADABLE_SHARE of them. Read and
    decoded in threads, in order (Pillow decodes and resizes outside the GIL, and a bucket's files are fetched at
    once); a read longer than `every_s` says how far it is, every `every_s`."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(file, shape: list[int] | None):
        try:
            raw = file[0]()
            return decode_image(raw, shape or image_shape(raw, file[1]), file[1], resize=resize)
        except UnreadableImage as e:
            if not skip_unreadable:
                raise
            return e

    resize, first = shape is not None, 0
    while shape is None:  # colour and size as the first image's, for every one
        image = attempt(files[first], None)
        if isinstance(image, np.ndarray):
            shape = list(image.shape)
        elif (first := first + 1) == len(files):
            raise image
    images, kept, bad, started = [], [], [], time.monotonic()
    said, pool = started, ThreadPoolExecutor()
    try:
        decoded = pool.map(lambda file: attempt(file, shape), files)
        for i, ((_, name), image) in enumerate(zip(files, decoded)):
            if isinstance(image, UnreadableImage):
                bad.append(image)
                if len(bad) > UNREADABLE_SHARE * len(files):
                    raise DataError(f"{bad[0]}; {len(bad):,} of the first {i + 1:,} files are no images: is "
                                    "data.path the right folder?")
                continue
            if image.shape != tuple(shape):
                raise DataError(f"images differ in size: {files[first][1]} is {shape[2]}x{shape[1]}, {name} is "
                                f"{image.shape[2]}x{image.shape[1]} (width x height): set data.feature_shape: "
                                "[C, H, W] to resize every image to H x W")
            images.append(image)
            kept.append(i)
            if (now := time.monotonic()) - said >= every_s and i + 1 < len(files):
                said = now
                print(f"data: {i + 1:,} of {len(files):,} images decoded ({now - started:.0f} s)", flush=True)
    finally:
        pool.shutdown(cancel_futures=True)  # after a bad file, the others are not decoded for nothing
    if bad:
        print(f"data: {len(bad):,} of {len(files):,} files are no images, and are left out: "
              + "; ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else ""), flush=True)
    return np.stack(images), kept


# The first bytes of the image files a table's cell may hold: PNG, JPEG, GIF, BMP, TIFF (either byte order), WebP
MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


class ImageFile:
    """A table's cell that names an image file (datafiles.refer_images), read when its image is decoded."""

    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path

    def read(self) -> bytes:
        with self.fs.open_input_file(self.path) as fh:
            return fh.read()


def image_bytes(cell) -> bytes | None:
    """The image file a table's cell holds: Hugging Face datasets' {"bytes": ..., "path": ...} (their Parquet
    files store images so), the file's bytes themselves, or an ImageFile; else None."""
    if isinstance(cell, ImageFile):
        cell = cell.read()
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    return bytes(cell) if isinstance(cell, (bytes, bytearray)) and bytes(cell[:8]).startswith(MAGIC) else None


def is_image_column(values: np.ndarray) -> bool:
    """Whether a table's column holds image files (image_bytes), judged from its first cells."""
    first = [v for v in values[:20] if v is not None]
    return values.dtype == object and bool(first) and all(image_bytes(v) is not None for v in first)


def _open_image(raw: bytes, name: str, max_pixels: int | None = None, draft: tuple[str, int] | None = None):
    """The image in `raw`, loaded and stood upright; a JPEG decoded at the smallest scale whose sides are all
    at least `draft`'s size (in that mode), either way up."""
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(raw))  # reads the header only
        if max_pixels and image.width * image.height > max_pixels:
            raise DataError(f"{name} is {image.width}x{image.height} pixels, more than {max_pixels:,}: make it "
                            "smaller first")
        if draft and image.format == "JPEG":
            image.draft(draft[0], (draft[1], draft[1]))
        image.load()  # a truncated file fails here, not later
        ImageOps.exif_transpose(image, in_place=True)  # as viewers show it: a phone's portrait photo stands upright
    except DataError:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage(f"{name}: not an image file of a kind Pillow reads (PNG, JPEG, BMP, GIF, WebP, TIFF, "
                              "...)") from None
    # a truncated or corrupt file: Pillow's decoders raise OSError, SyntaxError, EOFError, struct.error, ...
    except Exception as e:  # noqa: BLE001 (hostile input must be a 422, never a 500)
        raise UnreadableImage(f"{name}: not an image that Pillow reads ({type(e).__name__}: {e})") from None
    return image


def channels_last(shape) -> list[int] | None:
    """A sample shape [H, W, C] of an image stored channels last, as PIL, Keras, TensorFlow and Ray Data hold them
    (C 1, 3 or 4; H and W over 4, H not a channel count): that shape, else None. Models take [C, H, W]."""
    shape = list(shape)
    if len(shape) == 3 and shape[2] in (1, 3, 4) and shape[0] not in (1, 3, 4) and min(shape[:2]) > 4:
        return shape
    return None
