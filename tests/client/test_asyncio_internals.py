"""The private asyncio name the connection relies on (django_ws_client.asyncio_internals):
it must still make a task current, and give back the one it replaced, for a handler's
first step to run as its consumer (tests/e2e/test_eager_handlers.py shows the rest)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from django_ws_client.asyncio_internals import swap_current_task


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks, and the swap, are 3.12+")
async def test_swap_current_task_makes_a_task_current_and_gives_back_the_one_it_replaced() -> None:
    assert swap_current_task is not None, "asyncio.tasks._swap_current_task is gone"
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    consumer = loop.create_task(asyncio.sleep(30))  # a consumer's task, waiting
    await asyncio.sleep(0)
    previous = swap_current_task(loop, consumer)
    try:
        now = asyncio.current_task()
    finally:
        restored = swap_current_task(loop, previous)
    print(f"\ncurrent while swapped: {now.get_name() if now else None}; before and after: {me}")
    assert previous is me and me is not None
    assert now is consumer
    assert restored is consumer
    assert asyncio.current_task() is me
    consumer.cancel()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.11 only")
def test_without_eager_tasks_there_is_no_swap_and_handlers_keep_to_their_task() -> None:
    assert swap_current_task is None
