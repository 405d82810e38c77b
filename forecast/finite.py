"""The one rule behind "nothing broken is published": find NaN or infinite entries, refuse them.

Forecasts (`forecast.layout.check_finite`), the scores training publishes
(`forecast.training.check_finite`) and the scores an unpublished run uploads
(`forecast.tracking.sync`) all refuse through `require_finite`; each caller words its message.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from forecast.errors import NonFiniteError


def non_finite(values: ArrayLike) -> np.ndarray:
    """(n,) bool: which of the n entries of `values` (scalars, or rows of any shape) hold a NaN or
    an infinity."""
    finite = np.isfinite(np.asarray(values))
    return ~finite.all(axis=tuple(range(1, finite.ndim)))


def require_finite(values: ArrayLike, message: Callable[[np.ndarray], str]) -> None:
    """Raise NonFiniteError(message(bad)) when an entry of `values` is not finite, where `bad` is
    the (n,) bool mask of `non_finite`: the caller names the bad entries in its own words."""
    bad = non_finite(values)
    if bad.any():
        raise NonFiniteError(message(bad))
