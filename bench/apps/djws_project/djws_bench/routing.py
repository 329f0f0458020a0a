from django.urls import re_path

from djws_bench import consumers

urlpatterns = [
    re_path(r"^ws/chat/(?P<room>[\w-]{1,64})/$", consumers.ChatConsumer.as_asgi()),
    re_path(r"^ws/echo/$", consumers.EchoConsumer.as_asgi()),
]
