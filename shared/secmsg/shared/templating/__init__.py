"""Tenant-editable templates: the contract between ingest (validates at save) and notify and
retrieve (render at send). All of them must compile and render a source the same way, so all
of them use this package:

- :mod:`.sandbox` -- the Jinja2 sandbox and the limits a template runs within;
- :mod:`.kinds` -- the editable kinds, their variables, their shipped defaults (the files in
  ``defaults/``) and the sample a preview renders;
- :mod:`.renderer` -- the save-time check (:func:`validate`), rendering with a fallback to the
  default (:func:`render_or_default`) and the per-tenant render pool (:class:`RenderPool`);
- :mod:`.frame` -- the frame with the toolbar markers around a rendered body.

Templates shape only the body: subject, recipients and the toolbar markers (headers and the
marker lines / hidden span in the body) are added by notify outside the tenant template.
"""

from secmsg.shared.templating.frame import message_url, render_frames
from secmsg.shared.templating.kinds import (
    KINDS,
    SAMPLE_LINK,
    SAMPLE_LOGO,
    Kind,
    get_kind,
    notification_context,
    sample_context,
)
from secmsg.shared.templating.renderer import (
    RenderBusy,
    RenderPool,
    compile_checked,
    default_pool,
    render_or_default,
    validate,
)
from secmsg.shared.templating.sandbox import (
    ALLOWED_FILTERS,
    DEFAULT_LIMITS,
    LIMITS,
    CheckedTemplate,
    Limits,
    render_limited,
)

__all__ = ["ALLOWED_FILTERS", "DEFAULT_LIMITS", "KINDS", "LIMITS", "SAMPLE_LINK", "SAMPLE_LOGO",
           "CheckedTemplate", "Kind", "Limits", "RenderBusy", "RenderPool", "compile_checked",
           "default_pool", "get_kind", "message_url", "notification_context", "render_frames",
           "render_limited", "render_or_default", "sample_context", "validate"]
