"""The OpenAPI document's security requirements."""

from __future__ import annotations


async def test_openapi_marks_only_public_endpoints_open(client) -> None:
    """The bearer scheme applies to the document; register, login, health and ready need no credentials."""
    document = (await client.get("/schema/openapi.json")).json()

    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, method in [("/auth/register", "post"), ("/auth/login", "post"), ("/health", "get"), ("/ready", "get")]:
        assert document["paths"][path][method]["security"] == [{}], path
    assert "security" not in document["paths"]["/auth/me"]["get"]
