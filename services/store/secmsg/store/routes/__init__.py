"""store's HTTP routes (internal port only), one module per resource:

- ``dead_letters``: the platform operator's dead-letter list, replay and discard
"""

from __future__ import annotations

from secmsg.store.routes.dead_letters import admin_routes

__all__ = ["admin_routes"]
