from django.urls import re_path

from channels_bench import consumers

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<room>[\w-]{1,64})/$", consumers.ChatConsumer.as_asgi()),
    re_path(r"^ws/echo/$", consumers.EchoConsumer.as_asgi()),
]
