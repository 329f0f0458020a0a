"""Who may call what on the broker: role credentials and edge keys, checked before any RPC.

One interceptor in front of the servicer, so the servicer's methods stay about shards:

* With role secrets configured (``--edge-secrets``, ``--publisher-secrets``,
  ``--admin-secrets``), every call to ``django_ws.v1.Broker`` must carry
  ``authorization: Bearer <secret>`` of a role allowed that method: ``Attach`` is for
  edges, ``Publish`` for publishers (plain Django processes) and edges, ``Stats`` and
  ``Reshard`` for the admin. A missing or unknown secret is UNAUTHENTICATED; a known secret of
  another role is PERMISSION_DENIED. With none configured (the embedded broker on its
  private unix socket, or a network already fenced by mTLS), roles are not checked.
* Always, an ``Attach`` must carry its edge key, and its hello must name the edge id
  that key derives (:func:`django_ws_proto.credentials.edge_id_for`): a stolen edge id
  without its key is PERMISSION_DENIED before the broker acts on the hello, so the
  live edge keeps its stream. The key's presence is checked here; the hello, which
  only the stream's first frame carries, by :func:`attach_identity_refusal`, which the
  servicer calls once per stream.

The gRPC health service is left open: Kubernetes probes cannot send metadata, and it
tells nothing but SERVING or not.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from django_ws_broker import metrics
from django_ws_proto.credentials import (
    AUTHORIZATION,
    BEARER,
    EDGE_KEY,
    Role,
    SecretFile,
    SecretFileError,
    edge_id_for,
)

logger = logging.getLogger("django_ws.broker.auth")

SERVICE_PREFIX = "/django_ws.v1.Broker/"

METHOD_ROLES: Mapping[str, tuple[Role, ...]] = {
    "Attach": (Role.EDGE,),
    # An edge may publish on its stream anyway; allowing the unary call too grants it
    # nothing new, and code in an edge pod outside a worker's context (a thread, a
    # management command) publishes through the unary API with the pod's edge secret.
    "Publish": (Role.PUBLISHER, Role.EDGE),
    "Stats": (Role.ADMIN,),
    "Reshard": (Role.ADMIN,),
    "Members": (Role.PUBLISHER, Role.EDGE),
}
"""The roles allowed each method of the broker service, the first named in refusals; a
method not listed here (added to the proto later) is refused to everyone until it is
given a role."""


@dataclass(frozen=True)
class RoleSecretFiles:
    """Where each role's accepted secrets are: files of one secret a line."""

    edge: Path
    publisher: Path
    admin: Path


class RoleSecrets:
    """The accepted secrets of each role, read again when their files change."""

    def __init__(self, files: RoleSecretFiles) -> None:
        self.files = {
            Role.EDGE: SecretFile(files.edge, "--edge-secrets"),
            Role.PUBLISHER: SecretFile(files.publisher, "--publisher-secrets"),
            Role.ADMIN: SecretFile(files.admin, "--admin-secrets"),
        }
        seen: dict[str, Role] = {}
        for role, file in self.files.items():
            for value in file.values:
                if value in seen and seen[value] is not role:
                    raise SecretFileError(
                        f"--{seen[value].value}-secrets and --{role.value}-secrets list the "
                        "same secret: each role needs its own, or roles mean nothing"
                    )
                seen[value] = role

    def role_of(self, presented: str) -> Role | None:
        """The role whose secret was presented, or None. Every listed secret is
        compared in constant time, so the answer's timing tells nothing about them."""
        found: Role | None = None
        candidate = presented.encode()
        for role, file in self.files.items():
            for value in file.values:
                if hmac.compare_digest(candidate, value.encode()):
                    found = role
        return found


LOG_INTERVAL_SECONDS = 10.0
"""Refusals are logged at most once per this many seconds (each one is counted in
``django_ws_broker_access_refused_total``): a caller hammering the port with bad
secrets must not fill the broker's log."""


class _RefusalLog:
    """Logs the first refusal, then at most one per interval, saying how many were not
    logged in between."""

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._last = -interval
        self._unlogged = 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._unlogged += 1
            return
        if self._unlogged:
            message += f" ({self._unlogged} more refused since the last one logged)"
        logger.warning("%s", message)
        self._last, self._unlogged = now, 0


_refusal_log = _RefusalLog()


def _metadata(details: grpc.HandlerCallDetails) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in details.invocation_metadata or ():
        if isinstance(value, str):
            found.setdefault(key, value)
    return found


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks role credentials and edge keys before the servicer sees a call."""

    def __init__(self, secrets: RoleSecrets | None) -> None:
        self.secrets = secrets

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(SERVICE_PREFIX):
            return handler
        name = method[len(SERVICE_PREFIX) :]
        metadata = _metadata(details)
        refusal = self._refusal(name, metadata)
        if refusal is not None:
            code, reason, message = refusal
            metrics.ACCESS_REFUSED.labels(reason=reason).inc()
            _refusal_log.warn(f"refused a call to {name}: {message}")
            return _refusing(handler, code, message)
        return handler

    def _refusal(
        self, name: str, metadata: Mapping[str, str]
    ) -> tuple[grpc.StatusCode, str, str] | None:
        """What to refuse the call with, or None to let it through."""
        if self.secrets is not None:
            allowed = METHOD_ROLES.get(name)
            if allowed is None:
                return (
                    grpc.StatusCode.PERMISSION_DENIED,
                    "unknown_method",
                    f"{name} has no role allowed to call it",
                )
            credential = metadata.get(AUTHORIZATION, "")
            role = (
                self.secrets.role_of(credential[len(BEARER) :])
                if credential.startswith(BEARER)
                else None
            )
            if role is None:
                return (
                    grpc.StatusCode.UNAUTHENTICATED,
                    "unauthenticated",
                    f"{name} needs the {allowed[0].value} role's secret in the "
                    "'authorization: Bearer ...' metadata; none or an unknown one was sent",
                )
            if role not in allowed:
                return (
                    grpc.StatusCode.PERMISSION_DENIED,
                    "wrong_role",
                    f"the {role.value} role may not call {name}; it needs the "
                    f"{allowed[0].value} role's secret",
                )
        if name == "Attach" and not metadata.get(EDGE_KEY):
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                "no_edge_key",
                f"Attach needs the edge's key in the '{EDGE_KEY}' metadata (the edge id "
                "is derived from it); this client sent none",
            )
        return None


def _refusing(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends every call with ``code``."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_unary_rpc_method_handler(
        refuse, handler.request_deserializer, handler.response_serializer
    )


def attach_identity_refusal(metadata: Any, edge_id: str) -> str | None:
    """Why an ``Attach`` whose hello names ``edge_id`` is refused, or None: the id must be
    the one the stream's edge key derives, so a stolen edge id without its key cannot
    take over the live edge's stream.

    The servicer calls this once, right after reading the hello (a malformed id is
    refused first, by its own rule). Checking here rather than by wrapping the stream in
    the interceptor keeps every later frame off an extra Python generator hop: that
    wrapper cost about a third of a core at 8,000 deliveries/s in the benchmark's S1.
    """
    key = ""
    for name, value in metadata or ():
        if name == EDGE_KEY and isinstance(value, str):
            key = value
            break
    if hmac.compare_digest(edge_id, edge_id_for(key)):
        return None
    metrics.ACCESS_REFUSED.labels(reason="edge_key_mismatch").inc()
    _refusal_log.warn("refused an Attach: its hello names an edge id its key does not derive")
    return (
        "the hello's edge id is not the one derived from this stream's edge key: "
        "an edge can only attach as itself"
    )
