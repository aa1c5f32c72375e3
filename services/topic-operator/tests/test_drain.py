"""The pre-delete hook's drain, against a stand-in for the API server (none runs here)
that keeps a deleted resource while its finalizer is on, as the real one does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from omnistock.topic_operator.drain import KubernetesApi, drain

PATH = "/apis/omnistock.io/v1alpha1/namespaces/{namespace}/kafkatopics"


class ApiServer:
    """KafkaTopics of one namespace; ``operator_running`` removes finalizers of deleted
    resources on each list, as the operator's delete handler would."""

    def __init__(self, items: list[dict[str, Any]], *, operator_running: bool) -> None:
        self.items = {item["metadata"]["name"]: item for item in items}
        self.operator_running = operator_running
        self.app = web.Application()
        self.app.router.add_get(PATH, self.list)
        self.app.router.add_delete(PATH + "/{name}", self.delete)

    async def list(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer token"
        wanted = dict(pair.split("=") for pair in request.query["labelSelector"].split(",") if pair)
        if self.operator_running:
            for name, item in list(self.items.items()):
                if "deletionTimestamp" in item["metadata"]:
                    del self.items[name]
        found = [
            item
            for item in self.items.values()
            if all(item["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]
        return web.json_response({"items": found})

    async def delete(self, request: web.Request) -> web.Response:
        item = self.items.get(request.match_info["name"])
        if item is None:
            return web.json_response({}, status=404)
        if item["metadata"].get("finalizers"):
            item["metadata"]["deletionTimestamp"] = "2026-11-21T12:00:00Z"
        else:
            del self.items[request.match_info["name"]]
        return web.json_response(item)


def topic(name: str, release: str, *, finalizer: bool) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/instance": release},
            "finalizers": ["omnistock.io/topic-operator"] if finalizer else [],
        },
        "status": {"conditions": [{"type": "Ready", "reason": "Created"}]},
    }


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ApiServer, str]]:
    api = ApiServer(
        [
            topic("orders-events", "omnistock", finalizer=True),
            topic("inventory-stock", "omnistock", finalizer=False),
            topic("other-release", "other", finalizer=True),
        ],
        operator_running=request.param,
    )
    test_server = TestServer(api.app)
    await test_server.start_server()
    yield api, str(test_server.make_url(""))
    await test_server.close()


@pytest.mark.parametrize("server", [True], indirect=True)
async def test_the_releases_topics_are_deleted_while_the_operator_runs(
    server: tuple[ApiServer, str],
) -> None:
    api, url = server

    deleted = await drain(
        KubernetesApi(url, "token", False),
        "shop",
        "app.kubernetes.io/instance=omnistock",
        poll_s=0.01,
    )

    assert sorted(deleted) == ["inventory-stock", "orders-events"]
    assert list(api.items) == ["other-release"]


@pytest.mark.parametrize("server", [False], indirect=True)
async def test_without_the_operator_it_fails_naming_what_is_left(
    server: tuple[ApiServer, str],
) -> None:
    _, url = server

    with pytest.raises(TimeoutError, match=r"orders-events \(Ready: Created\)"):
        await drain(
            KubernetesApi(url, "token", False),
            "shop",
            "app.kubernetes.io/instance=omnistock",
            timeout_s=0.2,
            poll_s=0.01,
        )
