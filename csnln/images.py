"""Reading and writing images as uint8 RGB arrays [H, W, 3]."""
import pathlib

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np

from .config import UserError
from .files import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageError(UserError, ValueError):
    """An image file that is missing or cannot be decoded; the message names the file."""


def to_rgb_uint8(img):
    """Any decoded image -> uint8 [H, W, 3]: grey replicated, alpha dropped, 16-bit scaled."""
    img = np.asarray(img)
    if img.dtype == np.uint16:
        img = np.clip(np.round(img / 257.0), 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
        else:
            raise ImageError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ImageError(f"unsupported image shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 2:  # grey + alpha
        img = np.repeat(img[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def read_image(path):
    """-> uint8 [H, W, 3]; raises ImageError naming `path` if it is missing or unreadable."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        img = imageio.imread(path)
    except Exception as e:
        if "Could not find a backend" in str(e):  # no decoder recognised the bytes
            raise ImageError(f"{path} is not an image (or not a format imageio reads: "
                             f"{', '.join(IMAGE_EXTENSIONS)})") from None
        raise ImageError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    try:
        return to_rgb_uint8(img)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from e


def write_image(path, img):
    """Write uint8 [H, W, 3] (or [H, W]) atomically; the format follows the extension."""
    encoded = iio.imwrite("<bytes>", img, extension=pathlib.Path(path).suffix)
    atomic_write(path, lambda f: f.write(encoded))


def to_tensor(img, rgb_range):
    """uint8 [H, W, 3] -> float32 tensor [3, H, W] in [0, rgb_range]."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().mul_(rgb_range / 255.0)


def to_uint8(tensor, rgb_range):
    """float tensor [3, H, W] in [0, rgb_range] -> uint8 [H, W, 3], rounded and clipped."""
    arr = (tensor.detach().float() * (255.0 / rgb_range)).round_().clamp_(0, 255).byte().cpu().numpy()
    return arr.transpose(1, 2, 0)
