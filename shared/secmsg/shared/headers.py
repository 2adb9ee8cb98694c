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


# A tenant's List-Unsubscribe targets (``tenants.list_unsubscribe``: ingest checks them at
# save, notify again before it writes the header): printable ASCII without space, angle
# brackets or commas, which delimit the header's list (RFC 2369); https for one-click (RFC 8058).
UNSUBSCRIBE_URL = re.compile(r"https://[\x21-\x2b\x2d-\x3b=\x3f-\x7e]{3,500}\Z")
UNSUBSCRIBE_MAILTO = re.compile(r"mailto:[\x21-\x2b\x2d-\x3b=\x3f-\x7e]{3,300}\Z")
