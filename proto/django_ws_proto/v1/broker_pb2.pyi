from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_DICT: _ClassVar[EventKind]
    EVENT_KIND_GROUP_MESSAGE: _ClassVar[EventKind]
    EVENT_KIND_CONTROL: _ClassVar[EventKind]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_DICT: EventKind
EVENT_KIND_GROUP_MESSAGE: EventKind
EVENT_KIND_CONTROL: EventKind

class Event(_message.Message):
    __slots__ = ("type", "kind", "body")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    type: str
    kind: EventKind
    body: bytes
    def __init__(self, type: _Optional[str] = ..., kind: _Optional[_Union[EventKind, str]] = ..., body: _Optional[bytes] = ...) -> None: ...

class Publish(_message.Message):
    __slots__ = ("group", "channel", "event", "trace", "sent_at")
    class TraceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    group: str
    channel: str
    event: Event
    trace: _containers.ScalarMap[str, str]
    sent_at: float
    def __init__(self, group: _Optional[str] = ..., channel: _Optional[str] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., trace: _Optional[_Mapping[str, str]] = ..., sent_at: _Optional[float] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("edge_id", "ordinal", "shards")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    ordinal: int
    shards: int
    def __init__(self, edge_id: _Optional[str] = ..., ordinal: _Optional[int] = ..., shards: _Optional[int] = ...) -> None: ...

class EdgeFrame(_message.Message):
    __slots__ = ("hello", "subscribe", "publish", "unsubscribe", "sync")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    subscribe: _containers.RepeatedScalarFieldContainer[str]
    publish: _containers.RepeatedCompositeFieldContainer[Publish]
    unsubscribe: _containers.RepeatedScalarFieldContainer[str]
    sync: int
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., subscribe: _Optional[_Iterable[str]] = ..., publish: _Optional[_Iterable[_Union[Publish, _Mapping]]] = ..., unsubscribe: _Optional[_Iterable[str]] = ..., sync: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("group", "channel", "event", "trace", "sent_at")
    class TraceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    group: str
    channel: str
    event: Event
    trace: _containers.ScalarMap[str, str]
    sent_at: float
    def __init__(self, group: _Optional[str] = ..., channel: _Optional[str] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., trace: _Optional[_Mapping[str, str]] = ..., sent_at: _Optional[float] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("ordinal", "shards", "boot_id", "topology_epoch")
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ordinal: int
    shards: int
    boot_id: str
    topology_epoch: int
    def __init__(self, ordinal: _Optional[int] = ..., shards: _Optional[int] = ..., boot_id: _Optional[str] = ..., topology_epoch: _Optional[int] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("group", "channel", "reason")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    group: str
    channel: str
    reason: str
    def __init__(self, group: _Optional[str] = ..., channel: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BrokerFrame(_message.Message):
    __slots__ = ("welcome", "deliveries", "refusals", "synced", "dropped")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    refusals: _containers.RepeatedCompositeFieldContainer[Refusal]
    synced: int
    dropped: int
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., refusals: _Optional[_Iterable[_Union[Refusal, _Mapping]]] = ..., synced: _Optional[int] = ..., dropped: _Optional[int] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("publish", "shards")
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    publish: _containers.RepeatedCompositeFieldContainer[Publish]
    shards: int
    def __init__(self, publish: _Optional[_Iterable[_Union[Publish, _Mapping]]] = ..., shards: _Optional[int] = ...) -> None: ...

class PublishReply(_message.Message):
    __slots__ = ("accepted", "refusals")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    refusals: _containers.RepeatedCompositeFieldContainer[Refusal]
    def __init__(self, accepted: _Optional[int] = ..., refusals: _Optional[_Iterable[_Union[Refusal, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("include_groups",)
    INCLUDE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    include_groups: bool
    def __init__(self, include_groups: _Optional[bool] = ...) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("ordinal", "shards", "edges", "groups", "subscriptions", "published", "delivered", "dropped", "group_edges", "edge_ids", "boot_id")
    class GroupEdgesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    GROUP_EDGES_FIELD_NUMBER: _ClassVar[int]
    EDGE_IDS_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    ordinal: int
    shards: int
    edges: int
    groups: int
    subscriptions: int
    published: int
    delivered: int
    dropped: int
    group_edges: _containers.ScalarMap[str, int]
    edge_ids: _containers.RepeatedScalarFieldContainer[str]
    boot_id: str
    def __init__(self, ordinal: _Optional[int] = ..., shards: _Optional[int] = ..., edges: _Optional[int] = ..., groups: _Optional[int] = ..., subscriptions: _Optional[int] = ..., published: _Optional[int] = ..., delivered: _Optional[int] = ..., dropped: _Optional[int] = ..., group_edges: _Optional[_Mapping[str, int]] = ..., edge_ids: _Optional[_Iterable[str]] = ..., boot_id: _Optional[str] = ...) -> None: ...

class ReshardRequest(_message.Message):
    __slots__ = ("shards", "topology_epoch")
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    shards: int
    topology_epoch: int
    def __init__(self, shards: _Optional[int] = ..., topology_epoch: _Optional[int] = ...) -> None: ...

class ReshardReply(_message.Message):
    __slots__ = ("shards", "released_groups")
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_GROUPS_FIELD_NUMBER: _ClassVar[int]
    shards: int
    released_groups: int
    def __init__(self, shards: _Optional[int] = ..., released_groups: _Optional[int] = ...) -> None: ...
