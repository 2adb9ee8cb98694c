"""The one rule for a value that ends up inside an email header.

Ingest applies it to what senders submit (a clear 400); notify applies it again before it
builds a notification (the event may predate the rule, or come from elsewhere on the bus).
Refused: every C0 control but TAB, plus DEL, NEL, LINE and PARAGRAPH SEPARATOR -- the last
three are line breaks to ``str.splitlines``, which the email package uses when folding.
"""

from __future__ import annotations

import re

from secmsg.shared.errors import InvalidInput

_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def check_header_value(field: str, value: str) -> str:
    """``value`` unchanged, or ``InvalidInput`` naming ``field`` and the character found."""
    m = _CONTROLS.search(value)
    if m:
        raise InvalidInput(f"{field} must not contain CR, LF, NUL or another control "
                           f"character (found U+{ord(m.group()):04X}; TAB is allowed)")
    return value
