"""Word-level differences between two outputs, as escaped HTML for the Compare page.

The highlight is neutral (the same grey underline on both sides): it says where the two answers differ, never which
one is right. Whether each side passed is shown next to it, from its checks (``dashboard/cases.py``).
"""

from __future__ import annotations

import difflib
import html
import re

CHANGED = "<span style='background:#ececec;border-bottom:2px solid #8c8c8c'>{}</span>"


def side_by_side(before: str, after: str) -> tuple[str, str]:
    """Both texts with the words only one of them has highlighted, alike on both sides.

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
            left.append(CHANGED.format(old))
        if new:
            right.append(CHANGED.format(new))
    wrap = "<div style='white-space:pre-wrap;font-family:monospace'>{}</div>"
    return wrap.format("".join(left)), wrap.format("".join(right))
