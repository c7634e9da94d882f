"""The sliding windows a batch touched, as the rules receive them: what each rule judges."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Windows:
    """Household code, start pane and sum (integer units) of each window; `crossed_ms(households,
    starts)` gives, for some of them, when the reading that made it cross reached Kafka (the
    newest record time among the batch's readings in it): the rules ask only for the windows
    that alert, since it costs a lookup per pane of a window."""

    households: np.ndarray
    starts: np.ndarray
    units: np.ndarray
    crossed_ms: Callable[[np.ndarray, np.ndarray], np.ndarray]
