"""Project resolution without a configured project (``server-api.md`` §2.3, checklist 13, 15)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def unconfigured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A header-routed server: no COFLUX_PROJECT and no ``%`` public host."""
    with running_server(tmp_path_factory.mktemp("unconfigured") / "data", project=None) as s:
        yield s


@pytest.fixture
async def http(unconfigured: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=unconfigured.url, trust_env=False, timeout=10) as c:
        yield c


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.mark.parametrize(
    "path", ["/api/discover", "/topics/workspaces", "/logs?run=Rabc", "/blobs/" + "0" * 64]
)
async def test_no_project_is_not_configured(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code == 500
    assert response.json() == {"error": "not_configured"}


async def test_project_from_header_or_query(
    http: httpx.AsyncClient, unconfigured: ServerProcess
) -> None:
    by_header = await http.post(
        "/api/create_workspace", json={"name": "one"}, headers={"X-Project": "acme"}
    )
    assert by_header.status_code == 200, by_header.text
    workspace_id = by_header.json()["id"]
    by_query = await http.get("/topics/workspaces", params={"project": "acme"})
    assert by_query.status_code == 200
    assert by_query.json()[workspace_id]["name"] == "one"
    other = await http.get("/topics/workspaces", headers={"X-Project": "other"})
    assert other.status_code == 200
    assert workspace_id not in other.json()
    assert (unconfigured.data_dir / "projects" / "acme").is_dir()


UNSAFE_PROJECTS = ["..", ".", "a/b", "a" * 64, "a b", "a\\b"]


@pytest.mark.parametrize(
    ("via", "project"),
    [("header", p) for p in UNSAFE_PROJECTS] + [("query", p) for p in [*UNSAFE_PROJECTS, "ü"]],
)
async def test_unsafe_project_ids_are_rejected_without_touching_the_disk(
    http: httpx.AsyncClient, unconfigured: ServerProcess, via: str, project: str
) -> None:
    before = tree(unconfigured.data_dir)
    kwargs: dict[str, object] = (
        {"headers": {"X-Project": project}} if via == "header" else {"params": {"project": project}}
    )
    for method, path in [
        ("GET", "/api/discover"),
        ("POST", "/api/create_workspace"),
        ("GET", "/topics/workspaces"),
        ("POST", "/logs"),
        ("PUT", "/blobs/" + "0" * 64),
    ]:
        response = await http.request(method, path, json={"name": "x"}, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 400, (method, path, response.text)
        assert response.json() == {"error": "invalid_project"}
    assert tree(unconfigured.data_dir) == before


async def test_longest_valid_project_id_is_accepted(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/discover", headers={"X-Project": "a" * 63})
    assert response.status_code == 200
