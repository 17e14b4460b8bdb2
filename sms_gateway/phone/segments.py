"""How a phone receives a long text: the segments of a concatenated SMS, for display.

A text in the GSM 03.38 alphabet fits 160 characters in one SMS, 153 per segment once split (the rest of each
segment is the concatenation header); any other character makes the whole text UCS-2: 70 UTF-16 units in one,
67 per segment. Characters of the GSM extension table take two septets and are never split from their escape.
"""

from __future__ import annotations

from collections.abc import Callable

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM_SINGLE, GSM_SEGMENT = 160, 153
UCS2_SINGLE, UCS2_SEGMENT = 70, 67


def is_gsm7(text: str) -> bool:
    return all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text)


def segments(text: str) -> list[str]:
    """`text` as the phone receives it: one part when it fits a single SMS, else its concatenated segments."""
    if is_gsm7(text):
        return _split(text, GSM_SINGLE, GSM_SEGMENT, lambda ch: 2 if ch in GSM_EXTENSION else 1)
    return _split(text, UCS2_SINGLE, UCS2_SEGMENT, lambda ch: 2 if ord(ch) > 0xFFFF else 1)


def _split(text: str, single: int, per_segment: int, size: Callable[[str], int]) -> list[str]:
    if sum(size(ch) for ch in text) <= single:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        width = size(ch)
        if used + width > per_segment:
            parts.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += width
    if current:
        parts.append("".join(current))
    return parts
