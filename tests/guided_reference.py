"""He et al.'s guided filter written out from the paper in float64 numpy: the reference of the guided
filter tests, so that they run without OpenCV's contrib wheel (``cv2.ximgproc``).

K. He, J. Sun, X. Tang, "Guided Image Filtering", ECCV 2010 / TPAMI 2013, Algorithm 1, with OpenCV's
``BORDER_REFLECT`` border (``abc|cba``, numpy's ``"symmetric"``; reflected again as often as the
window needs on images smaller than it), which is what ``cv2.ximgproc.guidedFilter`` uses;
``test_opencv_fallback.py`` checks this function against ximgproc where the contrib wheel is
installed.
"""

from __future__ import annotations

import numpy as np


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean of the (2 radius + 1)^2 window around each pixel of the (H, W) array ``x``, float64."""
    padded = np.pad(np.asarray(x, dtype=np.float64), radius, mode="symmetric")
    table = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1))
    table[1:, 1:] = padded.cumsum(0).cumsum(1)
    k = 2 * radius + 1
    h, w = x.shape
    sums = table[k:k + h, k:k + w] - table[:h, k:k + w] - table[k:k + h, :w] + table[:h, :w]
    return sums / (k * k)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Algorithm 1 of He et al. on (H, W) planes: the output float32 (H, W)."""
    i, p = np.asarray(guide, dtype=np.float64), np.asarray(src, dtype=np.float64)
    mean_i, mean_p = box_mean(i, radius), box_mean(p, radius)
    var_i = box_mean(i * i, radius) - mean_i ** 2
    cov_ip = box_mean(i * p, radius) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return (box_mean(a, radius) * i + box_mean(b, radius)).astype(np.float32)
