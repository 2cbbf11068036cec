"""How inputs are read: LoadOptions, the load stage's settings, which every reader of inputs takes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InvalidParameterError


@dataclass(frozen=True)
class LoadOptions:
    """How inputs are read. The defaults are PaddleOCR's where it has one."""

    # Pillow's decompression-bomb limit, which PaddleX also applies to PDF pages (rendering a larger page
    # smaller: pdf_render_scale) and its service to images.
    max_pixels: int = 178_956_970
    # PaddleX renders PDF pages at zoom 2.0, i.e. 144 dpi.
    pdf_dpi: float = 144.0
    # Folders are walked with their subfolders, as PaddleX's batch sampler does (os.walk).
    recursive: bool = True
    # seconds for a whole URL input (connecting, headers and body; checked between reads, so it may run over
    # by up to one more wait for data of this length)
    url_timeout: float = 30.0
    url_max_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_pixels", "url_max_bytes"):  # whole numbers: nan would switch the limit off
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InvalidParameterError(f"{name} must be a whole number of at least 1, got {value!r}")
        for name in ("pdf_dpi", "url_timeout"):  # finite: an infinite dpi has no page size
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.number)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise InvalidParameterError(f"{name} must be a number greater than 0 (and finite), got {value!r}")


DEFAULT_LOAD_OPTIONS = LoadOptions()
