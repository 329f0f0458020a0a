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
    __slots__ = ("group", "channel", "event", "trace", "sent_at", "seq", "exclude")
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
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    group: str
    channel: str
    event: Event
    trace: _containers.ScalarMap[str, str]
    sent_at: float
    seq: int
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group: _Optional[str] = ..., channel: _Optional[str] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., trace: _Optional[_Mapping[str, str]] = ..., sent_at: _Optional[float] = ..., seq: _Optional[int] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("edge_id", "ordinal", "shards", "topology_epoch")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    ordinal: int
    shards: int
    topology_epoch: int
    def __init__(self, edge_id: _Optional[str] = ..., ordinal: _Optional[int] = ..., shards: _Optional[int] = ..., topology_epoch: _Optional[int] = ...) -> None: ...

class EdgeFrame(_message.Message):
    __slots__ = ("hello", "subscribe", "publish", "unsubscribe", "sync", "resume", "members")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    subscribe: _containers.RepeatedScalarFieldContainer[str]
    publish: _containers.RepeatedCompositeFieldContainer[Publish]
    unsubscribe: _containers.RepeatedScalarFieldContainer[str]
    sync: int
    resume: _containers.RepeatedCompositeFieldContainer[Resume]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., subscribe: _Optional[_Iterable[str]] = ..., publish: _Optional[_Iterable[_Union[Publish, _Mapping]]] = ..., unsubscribe: _Optional[_Iterable[str]] = ..., sync: _Optional[int] = ..., resume: _Optional[_Iterable[_Union[Resume, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("group", "channel", "user", "info", "presence", "left", "restored")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    group: str
    channel: str
    user: str
    info: bytes
    presence: bool
    left: bool
    restored: bool
    def __init__(self, group: _Optional[str] = ..., channel: _Optional[str] = ..., user: _Optional[str] = ..., info: _Optional[bytes] = ..., presence: _Optional[bool] = ..., left: _Optional[bool] = ..., restored: _Optional[bool] = ...) -> None: ...

class Resume(_message.Message):
    __slots__ = ("group", "epoch", "offset", "request")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    group: str
    epoch: int
    offset: int
    request: int
    def __init__(self, group: _Optional[str] = ..., epoch: _Optional[int] = ..., offset: _Optional[int] = ..., request: _Optional[int] = ...) -> None: ...

class Recovered(_message.Message):
    __slots__ = ("request", "group", "epoch", "offset", "deliveries", "lost", "refused")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    request: int
    group: str
    epoch: int
    offset: int
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    lost: str
    refused: str
    def __init__(self, request: _Optional[int] = ..., group: _Optional[str] = ..., epoch: _Optional[int] = ..., offset: _Optional[int] = ..., deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., lost: _Optional[str] = ..., refused: _Optional[str] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("group", "channel", "event", "trace", "sent_at", "epoch", "offset", "exclude")
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
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    group: str
    channel: str
    event: Event
    trace: _containers.ScalarMap[str, str]
    sent_at: float
    epoch: int
    offset: int
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group: _Optional[str] = ..., channel: _Optional[str] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., trace: _Optional[_Mapping[str, str]] = ..., sent_at: _Optional[float] = ..., epoch: _Optional[int] = ..., offset: _Optional[int] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

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
    __slots__ = ("group", "channel", "reason", "member")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    group: str
    channel: str
    reason: str
    member: bool
    def __init__(self, group: _Optional[str] = ..., channel: _Optional[str] = ..., reason: _Optional[str] = ..., member: _Optional[bool] = ...) -> None: ...

class BrokerFrame(_message.Message):
    __slots__ = ("welcome", "deliveries", "refusals", "synced", "dropped", "acked", "recovered")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    refusals: _containers.RepeatedCompositeFieldContainer[Refusal]
    synced: int
    dropped: int
    acked: int
    recovered: _containers.RepeatedCompositeFieldContainer[Recovered]
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., refusals: _Optional[_Iterable[_Union[Refusal, _Mapping]]] = ..., synced: _Optional[int] = ..., dropped: _Optional[int] = ..., acked: _Optional[int] = ..., recovered: _Optional[_Iterable[_Union[Recovered, _Mapping]]] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("publish", "shards", "publisher", "topology_epoch")
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    publish: _containers.RepeatedCompositeFieldContainer[Publish]
    shards: int
    publisher: str
    topology_epoch: int
    def __init__(self, publish: _Optional[_Iterable[_Union[Publish, _Mapping]]] = ..., shards: _Optional[int] = ..., publisher: _Optional[str] = ..., topology_epoch: _Optional[int] = ...) -> None: ...

class GroupHistory(_message.Message):
    __slots__ = ("group", "epoch", "offset", "deliveries", "published_at")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    group: str
    epoch: int
    offset: int
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    published_at: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, group: _Optional[str] = ..., epoch: _Optional[int] = ..., offset: _Optional[int] = ..., deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., published_at: _Optional[_Iterable[float]] = ...) -> None: ...

class BrokerState(_message.Message):
    __slots__ = ("ordinal", "shards", "groups", "publishers", "topology_epoch")
    class PublishersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHERS_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ordinal: int
    shards: int
    groups: _containers.RepeatedCompositeFieldContainer[GroupHistory]
    publishers: _containers.ScalarMap[str, int]
    topology_epoch: int
    def __init__(self, ordinal: _Optional[int] = ..., shards: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[GroupHistory, _Mapping]]] = ..., publishers: _Optional[_Mapping[str, int]] = ..., topology_epoch: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("ordinal", "shards", "edges", "groups", "subscriptions", "published", "delivered", "dropped", "group_edges", "edge_ids", "boot_id", "publish_requests", "members")
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
    PUBLISH_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
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
    publish_requests: int
    members: int
    def __init__(self, ordinal: _Optional[int] = ..., shards: _Optional[int] = ..., edges: _Optional[int] = ..., groups: _Optional[int] = ..., subscriptions: _Optional[int] = ..., published: _Optional[int] = ..., delivered: _Optional[int] = ..., dropped: _Optional[int] = ..., group_edges: _Optional[_Mapping[str, int]] = ..., edge_ids: _Optional[_Iterable[str]] = ..., boot_id: _Optional[str] = ..., publish_requests: _Optional[int] = ..., members: _Optional[int] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ("group", "shards", "channels", "presence")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    group: str
    shards: int
    channels: bool
    presence: bool
    def __init__(self, group: _Optional[str] = ..., shards: _Optional[int] = ..., channels: _Optional[bool] = ..., presence: _Optional[bool] = ...) -> None: ...

class PresentUser(_message.Message):
    __slots__ = ("user", "info", "connections")
    USER_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    user: str
    info: bytes
    connections: int
    def __init__(self, user: _Optional[str] = ..., info: _Optional[bytes] = ..., connections: _Optional[int] = ...) -> None: ...

class MembersReply(_message.Message):
    __slots__ = ("count", "channels", "present", "presence")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    count: int
    channels: _containers.RepeatedScalarFieldContainer[str]
    present: _containers.RepeatedCompositeFieldContainer[PresentUser]
    presence: bool
    def __init__(self, count: _Optional[int] = ..., channels: _Optional[_Iterable[str]] = ..., present: _Optional[_Iterable[_Union[PresentUser, _Mapping]]] = ..., presence: _Optional[bool] = ...) -> None: ...

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
