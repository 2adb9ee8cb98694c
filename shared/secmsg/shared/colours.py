"""The brand-colour rule shared by ingest (refused at save) and the webmail (ignored if an older
value breaks it): the tenant colour is the background of white text (header, primary buttons)
and the text colour on white (links, secondary buttons), so its contrast against white must
reach WCAG 2.x AA for normal text, 4.5:1."""

from __future__ import annotations

AA_NORMAL_TEXT = 4.5


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(hex_colour: str) -> float:
    """WCAG relative luminance of ``#rgb`` or ``#rrggbb``."""
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(ch * 2 for ch in h)
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast_with_white(hex_colour: str) -> float:
    return 1.05 / (luminance(hex_colour) + 0.05)


def brand_colour_problem(hex_colour: str) -> str | None:
    """Why ``hex_colour`` cannot be the brand colour, or None when it can."""
    ratio = contrast_with_white(hex_colour)
    if ratio < AA_NORMAL_TEXT:
        return (f"primary_color {hex_colour} has a contrast of {ratio:.2f}:1 against white "
                f"(its text and background in the webmail and notifications); WCAG AA needs "
                f"at least {AA_NORMAL_TEXT}:1: choose a darker colour")
    return None
