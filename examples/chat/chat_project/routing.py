from chat.websockets import ChatConsumer, RoomConsumer
from django.urls import re_path

urlpatterns = [
    re_path(r"/ws/internalchat/?$", ChatConsumer.as_handler()),
    re_path(r"^/ws/chat/(?P<room>[\w-]{1,50})/$", RoomConsumer.as_handler()),
]
