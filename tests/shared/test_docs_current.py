"""The generated reference docs (configuration, OpenAPI, event schema) match the code."""

import pytest

from devstack import docs


@pytest.mark.parametrize("path", list(docs.generated()), ids=lambda p: p.name)
def test_generated_doc_is_current(path) -> None:  # type: ignore[no-untyped-def]
    expected = docs.generated()[path]
    assert path.exists(), f"{path} missing: run `uv run python -m devstack.docs`"
    assert path.read_text() == expected, f"{path} is stale: run `uv run python -m devstack.docs`"
