"""The sliding windows a batch touched, as the rules receive them: what each rule judges."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Windows:
    """The windows a batch touched, in runs of consecutive windows that hold the same panes (and
    so the same sum): household code, start pane of the run's first window, windows in the run,
    and their sum (integer units). `crossed_ms(households, starts)` gives, for some windows, when
    the reading that made it cross reached Kafka (the newest record time among the batch's
    readings in it): the rules ask only for the windows that alert, since it costs a lookup per
    pane of a window."""

    households: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    units: np.ndarray
    crossed_ms: Callable[[np.ndarray, np.ndarray], np.ndarray]
