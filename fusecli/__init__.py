"""fusecli: image fusion with deep unfolding networks.

Tensor contract (everywhere in the library): images are float32 tensors ``(B, C, H, W)`` with
values in [0, 1]; models fuse luminance, ``(B, 1, H, W)`` in and out, with sources in the order
their ``inputs`` attribute names (e.g. infrared, then visible). Colour is handled by
:mod:`fusecli.inference` with :mod:`fusecli.color` (full-range BT.601 YCbCr).

Public API::

    from fusecli import create_model, fuse_files, read_image
    model = create_model("auif-fusion", device="cpu")    # the infrared-visible default
    fuse_files(model, ["ir.png", "vis.png"], "fused.png")
"""

__version__ = "0.1.0"

from .errors import FusecliError  # noqa: E402
from .inference import fuse_files, fuse_images, fuse_tensors, resolve_device  # noqa: E402
from .io import read_image, write_image  # noqa: E402
from .models import create_model, list_models  # noqa: E402

__all__ = ["__version__", "FusecliError", "create_model", "list_models", "fuse_files", "fuse_images",
           "fuse_tensors", "resolve_device", "read_image", "write_image"]
