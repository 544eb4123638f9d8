"""The gateway's `/docs` page works offline: every file it loads is served by the gateway itself,
and its Content-Security-Policy lets it load them from this origin and nowhere else."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from gateway_service.config import Settings
from gateway_service.main import build


class _References(HTMLParser):
    """The URLs a page makes the browser fetch: script src and link href."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


@pytest.fixture(scope="module")
def gateway() -> Iterator[TestClient]:
    # No upstream is asked: the page and its files are the gateway's own.
    with TestClient(build(Settings(env="test")).app()) as client:
        yield client


def test_every_file_the_page_loads_comes_from_the_gateway(gateway: TestClient) -> None:
    page = gateway.get("/docs")
    assert page.status_code == 200
    references = _References()
    references.feed(page.text)
    assert len(references.urls) == 3  # Swagger UI's script, its stylesheet, the icon

    content_types = {}
    for url in references.urls:
        parts = urlsplit(url)
        assert not parts.scheme, f"{url} names a scheme"
        assert not parts.netloc, f"{url} names another host"
        asset = gateway.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
        content_types[parts.path.rsplit(".", 1)[1]] = asset.headers["content-type"]
    assert content_types["js"].startswith("text/javascript")
    assert content_types["css"].startswith("text/css")
    assert content_types["png"] == "image/png"


def test_the_page_may_load_from_this_origin_only(gateway: TestClient) -> None:
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in gateway.get("/docs").headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    script_sources = policy["script-src"].split()
    assert script_sources[0] == "'self'"
    assert all(source.startswith("'sha256-") for source in script_sources[1:])
    assert policy["style-src"].split()[0] == "'self'"
    for directive, sources in policy.items():
        assert "http" not in sources, f"{directive} names a host: {sources}"


def test_nothing_else_is_served_under_the_assets_path(gateway: TestClient) -> None:
    for path in ("/docs/assets/LICENSE", "/docs/assets/../config.py", "/docs/assets/"):
        assert gateway.get(path).status_code == 404, path
