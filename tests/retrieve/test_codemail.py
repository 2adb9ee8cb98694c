"""The code email's bodies: the shipped templates show the tenant's logo when it has one."""

from __future__ import annotations

from secmsg.retrieve import codemail


async def test_code_email_shows_the_tenant_logo_in_html_only() -> None:
    text, html = await codemail.render(tenant_id="acme", code="12345678", purpose="signin",
                                       valid_minutes=10, tenant_name="Acme <Medical>",
                                       footer=None, disclaimers=[], sources={},
                                       logo_url="https://acme.example/logo.png")
    assert "12345678" in text and "12345678" in html
    assert '<img src="https://acme.example/logo.png" alt="Acme &lt;Medical&gt;"' in html
    assert "logo.png" not in text
    _, plain = await codemail.render(tenant_id="acme", code="12345678", purpose="signin",
                                     valid_minutes=10, tenant_name="Acme", footer=None,
                                     disclaimers=[], sources={})
    assert "<img" not in plain
