"""Values made fit for strict JSON (no NaN, no Infinity), for the quarantine and the GX result."""

import math
from datetime import datetime

import numpy as np
import pandas as pd


def json_safe(value: object) -> object:
    """``value`` as strict JSON can hold it: non-finite floats spelled ``"NaN"``, ``"Infinity"``
    and ``"-Infinity"``; timestamps as ISO text; missing values (None, NaT, NA) as None; numpy
    scalars as Python ones; dicts and lists converted throughout; anything else as its text."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, bool | int | str):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)
