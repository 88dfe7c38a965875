"""A query's rows as a pandas frame, as every dashboard query returns them."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Engine


def frame(engine: Engine, query: Any) -> pd.DataFrame:
    """The rows of ``query``, built column by column (far faster than from row objects), each column's type inferred."""
    with engine.connect() as conn:
        result = conn.execute(query)
        keys, rows = list(result.keys()), result.fetchall()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(keys)
    return pd.DataFrame({k: pd.Series(list(c), dtype=object) for k, c in zip(keys, columns, strict=True)}).infer_objects()
