from __future__ import annotations

import redis

from flask_poststack.redis_server import find_redis_server
from flask_poststack.redis_server import RedisServer


def test_fixture_is_a_real_server(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    conn.set("k", "v")
    assert conn.get("k") == b"v"
    info = conn.info("server")
    assert info["tcp_port"] == int(redis_url.rsplit(":", 1)[1].split("/")[0])
    assert "redis_version" in info
    conn.close()


def test_fixture_is_flushed_between_tests(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    assert conn.get("k") is None
    conn.close()


def test_binary_is_found() -> None:
    assert find_redis_server().endswith("redis-server")


def test_appendonly_survives_a_kill() -> None:
    with RedisServer(appendonly="always") as server:
        conn = server.client()
        conn.rpush("q", "a", "b")
        conn.close()
        server.restart(kill=True)
        conn = server.client()
        assert conn.lrange("q", 0, -1) == [b"a", b"b"]
        conn.close()


def test_without_persistence_a_restart_loses_data() -> None:
    with RedisServer() as server:
        conn = server.client()
        conn.set("k", "v")
        conn.close()
        server.restart(kill=True)
        conn = server.client()
        assert conn.get("k") is None
        conn.close()
