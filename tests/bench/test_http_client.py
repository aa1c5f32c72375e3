"""The benchmarks' lean HTTP/1.1 client against a real uvicorn server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from bench._common import HttpClient, HttpxClient, http_client
from omnistock.devstack.serving import serving


def app() -> FastAPI:
    api = FastAPI()
    # /hang answers once a test sets this (the server's shutdown waits for open requests).
    api.state.release = release = asyncio.Event()

    @api.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"got": await request.json()}, status_code=201)

    @api.get("/chunked")
    async def chunked() -> StreamingResponse:
        def parts() -> Iterator[bytes]:
            yield b"hello, "
            yield b"world"

        return StreamingResponse(parts())

    @api.get("/close")
    async def close() -> Response:
        return Response(b"bye", headers={"Connection": "close"})

    @api.get("/hang")
    async def hang() -> None:
        await release.wait()

    return api


@pytest.fixture
def api() -> FastAPI:
    return app()


@pytest.fixture
async def url(api: FastAPI) -> AsyncIterator[str]:
    async with serving(api) as client:
        yield str(client.base_url).rstrip("/")


async def test_keep_alive_reuses_one_connection_for_sequential_requests(url: str) -> None:
    async with HttpClient(url, max_connections=8, timeout_s=10) as client:
        request = client.prepare("POST", "/echo", {"n": 1})
        answers = [await client.send(request) for _ in range(20)]

        assert client.open_connections == 1
    assert {a.status for a in answers} == {201}
    assert answers[0].json() == {"got": {"n": 1}}


async def test_concurrent_requests_share_at_most_max_connections(url: str) -> None:
    async with HttpClient(url, max_connections=3, timeout_s=10) as client:
        answers = await asyncio.gather(
            *(client.request("POST", "/echo", {"n": n}) for n in range(30))
        )

        assert client.open_connections <= 3
    assert sorted(a.json()["got"]["n"] for a in answers) == list(range(30))


async def test_connections_opened_ahead_are_used(url: str) -> None:
    async with HttpClient(url, max_connections=50, timeout_s=10) as client:
        await client.connect(50)
        assert client.open_connections == 50
        await asyncio.gather(*(client.request("GET", "/readyz") for _ in range(50)))

        assert client.open_connections == 50


async def test_chunked_bodies_and_closed_connections(url: str) -> None:
    async with HttpClient(url, max_connections=2, timeout_s=10) as client:
        chunked = await client.request("GET", "/chunked")
        assert client.open_connections == 1
        closing = await client.request("GET", "/close")

        # The server said it would close: that connection is not kept.
        assert client.open_connections == 0
        again = await client.request("GET", "/close")
    assert chunked.body == b"hello, world"
    assert closing.body == again.body == b"bye"


async def test_no_answer_within_the_timeout_is_a_timeout(url: str, api: FastAPI) -> None:
    try:
        async with HttpClient(url, max_connections=1, timeout_s=0.2) as client:
            with pytest.raises(TimeoutError):
                await client.request("GET", "/hang")
            # The connection that timed out is dropped, not reused for the next request.
            assert client.open_connections == 0
            assert (await client.request("GET", "/readyz")).status == 200
    finally:
        api.state.release.set()


@pytest.mark.parametrize("kind", ["lean", "httpx"])
async def test_both_clients_answer_alike(url: str, kind: str) -> None:
    async with http_client(kind, url, max_connections=2, timeout_s=10) as client:
        answer = await client.request("POST", "/echo", {"x": [1, 2]})

    assert (answer.status, answer.json()) == (201, {"got": {"x": [1, 2]}})


@pytest.mark.parametrize("client", [HttpClient, HttpxClient])
def test_load_goes_to_localhost_only(client: type[HttpClient] | type[HttpxClient]) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        client("http://example.com:80", max_connections=1, timeout_s=1)
