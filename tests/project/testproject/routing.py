from django.urls import re_path

from testproject import channels_style, consumers, tutorial

urlpatterns = [
    re_path(r"^ws/group/(?P<group>[\w.+-]+)/$", consumers.GroupRelayConsumer.as_handler()),
    re_path(r"^ws/raise/(?P<where>\w+)/$", consumers.RaisingConsumer.as_handler()),
    re_path(r"^ws/reject/$", consumers.RejectingConsumer.as_handler()),
    re_path(r"^ws/echo/$", consumers.EchoConsumer.as_handler()),
    re_path(r"^ws/room/(?P<room>[\w.-]+)/$", consumers.RoomConsumer.as_handler()),
    re_path(r"^ws/relay/(?P<room>[\w.-]+)/$", consumers.VerbatimRelayConsumer.as_handler()),
    re_path(r"^ws/faulty/(?P<where>\w+)/$", consumers.FaultyConsumer.as_handler()),
    re_path(r"^ws/rules/(?P<room>[\w.-]+)/$", consumers.HandlerRulesConsumer.as_handler()),
    re_path(r"^ws/chat/sync/(?P<room_name>\w+)/$", tutorial.ChatConsumer.as_asgi()),
    re_path(r"^ws/chat/async/(?P<room_name>\w+)/$", tutorial.AsyncChatConsumer.as_asgi()),
    re_path(r"^ws/chat/json/$", tutorial.JsonChatConsumer.as_asgi()),
    re_path(r"^ws/protocol/(?P<flavour>\w+)/$", tutorial.ProtocolConsumer.as_handler()),
    re_path(r"^ws/user/(?P<pk>\d+)/$", channels_style.UserConsumer.as_asgi()),
    re_path(r"^ws/room/$", channels_style.RoomConsumer.as_asgi()),
    re_path(r"^ws/presence/(?P<groups>[\w.+-]+)/$", consumers.PresenceConsumer.as_handler()),
    re_path(r"^ws/other-room/$", channels_style.OtherRoomConsumer.as_asgi()),
    re_path(r"^ws/elsewhere-room/$", channels_style.ElsewhereRoomConsumer.as_asgi()),
]
