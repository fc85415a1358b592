"""The Lua scripts behind slots and rate limits run exactly once per call, also when Redis has
forgotten them (a restart empties its script cache): real Redis."""

from __future__ import annotations

import uuid

from app.core.redis import get_redis, run_script, run_scripts

COUNT = "return redis.call('INCR', KEYS[1])"
COUNT_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_scripts_redis_forgot_run_once_each_beside_those_it_knows():
    redis = get_redis()
    first, second = f"test:{uuid.uuid4()}", f"test:{uuid.uuid4()}"
    await redis.script_flush()
    await run_script(COUNT, [first], [])  # known again; COUNT_BY is not

    results = await run_scripts([(COUNT, [first], []), (COUNT_BY, [second], [5]), (COUNT, [first], [])])

    assert results == [2, 5, 3]
    assert (await redis.get(first), await redis.get(second)) == ("3", "5")
    await redis.delete(first, second)
