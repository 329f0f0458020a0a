"""In-worker stream micro-benchmark: the CPU one group message costs on its way from a
worker's ``group_send`` to the broker inside that worker and back, without websockets.

With ``BROKER_IN_WORKER``, each S1 chat message crosses the worker's real
:class:`~django_ws_edge.links.BrokerLink` (its batching writer, its numbered and
acknowledged publishes), the in-process ``Attach`` stream
(:class:`~django_ws_edge.broker_in_worker.LocalAttachCall`), the real servicer and shard
(history, offsets) and the servicer's write loop, then comes back to the link, which
hands the delivery to the worker's layer. In the end-to-end benchmark that path is a
fifth of the worker's samples among the websocket reads and writes, the consumers and
the event loop, and the machine's noise between runs is larger than a change to it. Here
it runs alone: one link, subscribed to one group, publishes to it at a steady rate (as a
worker's consumers do in S1) and counts the deliveries coming back; the process's CPU
time over the round, divided by the messages, is the figure.

Each round runs in a process of its own, importing django-ws' packages from the run's
snapshot or a baseline commit's (``--baseline``), so a change and its predecessor
alternate in one run. ``python -m bench stream`` runs it; this module's ``main`` is one
round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.systems import ROOT, python_env

GROUP = "bench_stream"


async def one_round(rate: float, seconds: float) -> dict[str, Any]:
    """Publish ``rate`` messages a second for ``seconds`` through a link to the broker in
    this process; every message must come back."""
    from django_ws_broker.server import Broker, BrokerOptions
    from django_ws_client.transport.config import TransportConfig
    from django_ws_edge.broker_in_worker import LocalAttachCall
    from django_ws_edge.links import BrokerLink, LinkHandlers
    from django_ws_proto import codec
    from django_ws_proto.credentials import edge_id_for, new_edge_key
    from django_ws_proto.v1 import broker_pb2

    # The real broker's servicer and shard, with its default options; nothing listens.
    servicer = Broker(BrokerOptions(listen="unix:/nonexistent")).servicer
    loop = asyncio.get_running_loop()
    up = loop.create_future()
    messages = int(rate * seconds)
    delivered = 0
    all_back = asyncio.Event()

    def on_frame(ordinal: int, frame: broker_pb2.BrokerFrame) -> None:
        nonlocal delivered
        delivered += len(frame.deliveries)
        if delivered >= messages:
            all_back.set()

    def on_state(ordinal: int, is_up: bool) -> None:
        if is_up and not up.done():
            up.set_result(None)

    def resumes(ordinal: int, known: frozenset[str]) -> list[broker_pb2.Resume]:
        return [] if GROUP in known else [broker_pb2.Resume(group=GROUP)]

    edge_key = new_edge_key()
    link = BrokerLink(
        ordinal=0,
        address="unix:/nonexistent",
        shards=1,
        edge_id=edge_id_for(edge_key),
        edge_key=edge_key,
        config=TransportConfig(brokers=("unix:/nonexistent",), shards=1),
        handlers=LinkHandlers(
            resumes_owned=resumes,
            members_owned=lambda ordinal: [],
            on_frame=on_frame,
            on_state=on_state,
        ),
    )
    link.open_attach = lambda metadata: LocalAttachCall(servicer, metadata)
    link.start()
    await asyncio.wait_for(up, 10)
    event = codec.encode_dict_event({"type": "chat.message", "text": "x" * 40})
    period = 1.0 / rate
    started_cpu = time.process_time()
    started = loop.time()
    for sent in range(messages):
        due = started + sent * period
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        await link.publish(broker_pb2.Publish(group=GROUP, event=event))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_back.wait(), 10)  # a lost one shows in the result
    cpu = time.process_time() - started_cpu
    wall = loop.time() - started
    await link.close()
    return {
        "messages": messages,
        "delivered": delivered,
        "seconds": round(wall, 3),
        "cpu_us_per_message": round(cpu / max(delivered, 1) * 1e6, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one round of the in-worker stream micro")
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--event-loop", default="auto", help="auto, asyncio or uvloop")
    args = parser.parse_args(argv)
    try:
        # The loop a worker runs by default (EVENT_LOOP 'auto': uvloop when installed),
        # as its timers and callbacks are part of what a message costs.
        from django_ws_proto.event_loop import resolve_event_loop, run

        loop = resolve_event_loop(args.event_loop, "--event-loop")
        result = run(one_round(args.rate, args.seconds), loop)
        result["event_loop"] = loop.describe()
    except ImportError as exc:
        # A baseline commit from before the broker could run inside a worker.
        raise SystemExit(f"this code has no in-worker broker stream to measure: {exc}") from None
    print(json.dumps(result))


def run_stream_micro(
    sides: dict[str, str],
    *,
    rate: float,
    seconds: float,
    rounds: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Alternate the sides (label -> snapshot code label) round by round; the cheapest
    round of each is compared (other load only adds CPU time), medians beside it."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in sides}
    for round_number in range(1, rounds + 1):
        for label, code in sides.items():
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.stream_micro",
                    "--rate",
                    str(rate),
                    "--seconds",
                    str(seconds),
                ],
                cwd=ROOT,
                env=python_env(code),
                capture_output=True,
                text=True,
                timeout=seconds * 4 + 60,
            )
            if done.returncode != 0:
                raise SystemExit(f"the stream micro-benchmark failed for {label}:\n{done.stderr}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[label].append(result)
            log(
                f"  round {round_number} {label}: {result['cpu_us_per_message']} us of CPU "
                f"per message, {result['delivered']} of {result['messages']} delivered "
                f"({result['event_loop']})"
            )
    summary: dict[str, Any] = {}
    for label, results in runs.items():
        costs = [result["cpu_us_per_message"] for result in results]
        summary[label] = {
            "runs": results,
            "min_us_per_message": min(costs),
            "median_us_per_message": statistics.median(costs),
            "lost": sum(result["messages"] - result["delivered"] for result in results),
        }
    return summary


if __name__ == "__main__":
    main()
