"""A broker's saved state: what a graceful stop keeps for the next start.

On SIGTERM the broker writes every group's epoch, last offset and history, and the
publish seqs it has applied, to one file in ``--state-dir`` (a StatefulSet volume);
the next start loads it and deletes it. Deleting matters: a broker that is later
killed must not come back with this old state as if it were current, so after a
SIGKILL the next start finds no file and begins new epochs, which edges recognise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from django_ws_broker.shard import ShardState
from django_ws_proto.v1 import broker_pb2

logger = logging.getLogger("django_ws.broker")


class StateFile:
    """``<state dir>/broker-<ordinal>.state``, written atomically."""

    def __init__(self, directory: Path, ordinal: int) -> None:
        self.path = directory / f"broker-{ordinal}.state"

    def load_into(self, shard: ShardState) -> bool:
        """Continue from the saved state, if any; True when one was loaded."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            logger.info("no saved state at %s: groups start new epochs", self.path)
            return False
        try:
            state = broker_pb2.BrokerState.FromString(data)
            groups = shard.load_state(state)
        except (DecodeError, ValueError) as exc:
            logger.error("saved state at %s not used (%s): groups start new epochs", self.path, exc)
            return False
        finally:
            # Used once: a later crash must not bring this state back as current.
            self.path.unlink(missing_ok=True)
        logger.info(
            "continued from the saved state: %d groups' epochs, offsets and history, %d publishers",
            groups,
            len(state.publishers),
        )
        return True

    def save(self, shard: ShardState) -> None:
        """Write the state (to a temporary name, then renamed, so a half-written file
        is never loaded)."""
        state = shard.to_state()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(state.SerializeToString())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        logger.info(
            "saved %d groups' epochs, offsets and history to %s", len(state.groups), self.path
        )
