"""server-api.md checklist items on CORS, project routing and the pools export that no
other test checked, against the app in-process."""

from __future__ import annotations

from tests.unit.server.conftest import SUPER, Serve

ORIGIN_HEADERS = "access-control-allow-origin"


async def test_item_2_preflight_needs_no_credentials(serve: Serve) -> None:
    async with serve() as h:
        response = await h.client.options(
            "/api/discover",
            headers={
                "Origin": "https://studio.coflux.com",
                "Access-Control-Request-Method": "POST",
            },
        )
        assert response.status_code == 204
        assert response.headers["access-control-allow-methods"]
        assert response.headers["access-control-allow-headers"]
        assert response.headers["access-control-max-age"] == "86400"
        assert response.headers[ORIGIN_HEADERS] == "https://studio.coflux.com"
        assert "access-control-allow-credentials" not in response.headers


async def test_item_4_a_wildcard_origin_needs_a_label_and_the_same_scheme(serve: Serve) -> None:
    async with serve(COFLUX_ALLOW_ORIGINS="https://*.example.com") as h:
        echoed = await h.client.get("/api/discover", headers={"Origin": "https://a.example.com"})
        assert echoed.headers[ORIGIN_HEADERS] == "https://a.example.com"
        for origin in ("https://.example.com", "http://a.example.com", "https://example.com"):
            response = await h.client.get("/api/discover", headers={"Origin": origin})
            assert ORIGIN_HEADERS not in response.headers, origin


async def test_item_5_star_echoes_any_origin(serve: Serve) -> None:
    async with serve(COFLUX_ALLOW_ORIGINS="*") as h:
        for origin in ("https://evil.example", "http://localhost:3000", "null"):
            response = await h.client.get("/api/discover", headers={"Origin": origin})
            assert response.headers[ORIGIN_HEADERS] == origin


async def test_item_6_cors_headers_on_errors_and_every_resource(serve: Serve) -> None:
    origin = {"Origin": "https://studio.coflux.com"}
    async with serve() as h:
        auth = {**origin, **h.bearer(SUPER)}
        workspace = (await h.ok("create_workspace", {"name": "w"}))["id"]
        responses = {
            "401": await h.client.get("/api/discover", headers=origin),
            "404": await h.client.post("/api/nope", json={}, headers=auth),
            "409": await h.client.get("/api/discover", headers={**auth, "X-API-Version": "0.11"}),
            "blobs": await h.client.get(f"/blobs/{'0' * 64}", headers=auth),
            "logs": await h.client.get("/logs?run=R1", headers=auth),
            "metrics": await h.client.get("/metrics?run=R1", headers=auth),
            "topic": await h.client.get(f"/topics/workspaces/{workspace}/queue", headers=auth),
        }
        assert responses["404"].status_code == 404 and responses["409"].status_code == 409
        for name, response in responses.items():
            assert response.headers.get(ORIGIN_HEADERS) == origin["Origin"], name


async def test_item_9_item_10_multi_project_hosts(serve: Serve) -> None:
    async with serve() as h:
        created = await h.client.post(
            "/api/create_workspace",
            json={"name": "w"},
            headers={"Host": "acme.localhost:9999", **h.bearer(SUPER)},
        )
        assert created.status_code == 200, created.text
        workspace = created.json()["id"]
        # The port of the Host is ignored: the same project answers on another port.
        for headers in (
            {"Host": "acme.localhost"},
            {"Host": "acme.localhost:7777"},
            {"Host": "localhost:7777", "X-Project": "acme"},
        ):
            found = await h.client.get("/topics/workspaces", headers={**headers, **h.bearer(SUPER)})
            assert found.status_code == 200 and workspace in found.json(), headers
        required = await h.client.get("/topics/workspaces", headers={"Host": "localhost:7777"})
        assert (required.status_code, required.json()) == (400, {"error": "project_required"})


async def test_item_12_a_configured_project_refuses_other_subdomains(serve: Serve) -> None:
    async with serve(COFLUX_PROJECT="acme") as h:
        refused = await h.client.get(
            "/api/discover", headers={"Host": "other.localhost", **h.bearer(SUPER)}
        )
        assert (refused.status_code, refused.json()) == (403, {"error": "project_mismatch"})
        fine = await h.client.get(
            "/api/discover", headers={"Host": "acme.localhost", **h.bearer(SUPER)}
        )
        assert fine.status_code == 200


async def test_item_36_get_pools_exports_the_kubernetes_token_the_topic_hides(
    serve: Serve,
) -> None:
    async with serve(COFLUX_LAUNCHER_TYPES="kubernetes") as h:
        workspace = (await h.ok("create_workspace", {"name": "w"}))["id"]
        launcher = {"type": "kubernetes", "image": "i", "token": "k8s-secret", "namespace": "n"}
        body = {"workspaceId": workspace, "poolName": "k", "pool": {"launcher": launcher}}
        assert (await h.call("create_pool", body)).status_code == 204
        exported = await h.ok("get_pools", {"workspaceId": workspace})
        assert exported == {"k": {"modules": [], "launcher": launcher}}
        topic = await h.client.get(f"/topics/workspaces/{workspace}/pools", headers=h.bearer(SUPER))
        shown = topic.json()["k"]["launcher"]
        assert "token" not in shown and shown["namespace"] == "n"
        assert "k8s-secret" not in topic.text
