"""Word-level differences between two outputs, as escaped HTML for the Compare page."""

from __future__ import annotations

import difflib
import html
import re

DEL = "<span style='background:#ffd7d5;text-decoration:line-through'>{}</span>"
INS = "<span style='background:#ccffd8'>{}</span>"


def side_by_side(before: str, after: str) -> tuple[str, str]:
    """Both texts with what only one of them has highlighted (removed in the first, added in the second).

    Everything is HTML-escaped: outputs are untrusted model text.
    """
    a, b = re.split(r"(\s+)", before or ""), re.split(r"(\s+)", after or "")
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        old, new = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            left.append(old)
            right.append(new)
            continue
        if old:
            left.append(DEL.format(old))
        if new:
            right.append(INS.format(new))
    wrap = "<div style='white-space:pre-wrap;font-family:monospace'>{}</div>"
    return wrap.format("".join(left)), wrap.format("".join(right))
