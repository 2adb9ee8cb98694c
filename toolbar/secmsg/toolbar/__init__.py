"""Reference toolbar agent (see docs/toolbar.md)."""
