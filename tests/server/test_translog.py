"""The database-backed transparency log against protocol.log's in-memory tree, and its
HTTP endpoints, whose answers check with the protocol's own verification functions.
"""

from __future__ import annotations

import os
import random

import httpx
import pytest

from protocol.api import b64d
from protocol.checkpoint import Checkpoint
from protocol.log import MemoryTree, verify_consistency, verify_inclusion
from server import models
from server.run import EmbeddedServer
from server.translog import Appender, NodeReader, perfect_nodes
from tests.server.conftest import Enrol


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (0, 7), (4, 13), (8, 16), (3, 4), (0, 1000)])
def test_perfect_nodes_cover_the_range(lo: int, hi: int) -> None:
    covered = []
    for key in perfect_nodes(lo, hi):
        level, index = key >> 48, key & ((1 << 48) - 1)
        covered.extend(range(index << level, (index + 1) << level))
    assert covered == list(range(lo, hi))
    assert len(perfect_nodes(lo, hi)) <= 2 * (hi - lo).bit_length()


async def test_log_matches_the_reference_tree(server: EmbeddedServer) -> None:
    """Appends in uneven batches; roots and proofs equal the in-memory tree's."""
    rng = random.Random(7)
    reference = MemoryTree()
    nodes = NodeReader(capacity=64)  # small: most reads go to the database
    size = 0
    frontier: dict[int, bytes] = {}
    entries: list[bytes] = []
    while size < 300:
        appender = Appender(size, frontier)
        for _ in range(rng.randint(1, 40)):
            entry = os.urandom(32)
            entries.append(entry)
            assert appender.append(entry) == reference.append(entry)
        await models.LogNode.bulk_create(
            [models.LogNode(key=k, hash=h) for k, h in appender.new.items()]
        )
        size, frontier = appender.size, appender.frontier
        assert appender.root == reference.root()
        assert await nodes.root(size) == reference.root()
        assert await nodes.frontier(size) == frontier
    for _ in range(60):
        second = rng.randint(1, size)
        first = rng.randint(0, second)
        index = rng.randrange(second)
        path = await nodes.inclusion(index, second)
        assert path == reference.inclusion(index, second)
        verify_inclusion(index, second, entries[index], path, reference.root(second))
        proof = await nodes.consistency(first, second)
        assert proof == reference.consistency(first, second)
        verify_consistency(first, second, reference.root(first), reference.root(second), proof)
    # a node query per proof, not per hash: paths of many leaves in one go
    many = await nodes.inclusions(list(range(0, size, 7)), size)
    assert many == [reference.inclusion(i, size) for i in range(0, size, 7)]


async def test_log_endpoints(
    server: EmbeddedServer, enrolled: Enrol, anon: httpx.AsyncClient
) -> None:
    device, client = await enrolled("cam-1")
    device.shift(3)
    await device.send(client, device.made[:2])
    small = Checkpoint.load(
        b64d((await anon.get("/api/v1/log/checkpoint")).json()["data"]),
        server.services.keys.trust(),
    )
    await device.send(client, device.made[2:])
    big = Checkpoint.load(
        b64d((await anon.get("/api/v1/log/checkpoint")).json()["data"]),
        server.services.keys.trust(),
    )
    assert (small.size, big.size) == (2, 5)
    for made in device.made:
        index = made.seq  # one device: log index equals seq
        answer = (
            await anon.get("/api/v1/log/inclusion", params={"index": index, "size": 5})
        ).json()
        path = [b64d(p) for p in answer["path"]]
        verify_inclusion(index, 5, made.signed.digest, path, big.root)
    answer = (await anon.get("/api/v1/log/consistency", params={"first": 2, "second": 5})).json()
    verify_consistency(2, 5, small.root, big.root, [b64d(p) for p in answer["path"]])
    for params in ({"index": 5, "size": 5}, {"index": 0, "size": 6}, {"index": -1, "size": 2}):
        response = await anon.get("/api/v1/log/inclusion", params=params)
        assert response.status_code in (400, 404, 422)
        assert response.json()["code"]
    bad = await anon.get("/api/v1/log/consistency", params={"first": 3, "second": 2})
    assert bad.status_code == 400
    # on demand: the admin asks for a checkpoint and gets the newest one
    async with server.admin_client() as admin:
        again = await admin.post("/api/v1/admin/checkpoint")
    assert Checkpoint.parse(b64d(again.json()["data"]))[0].size == 5
