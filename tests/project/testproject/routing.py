from django.urls import re_path

from testproject import consumers

urlpatterns = [
    re_path(r"^ws/group/(?P<group>[\w.-]+)/$", consumers.GroupRelayConsumer.as_handler()),
    re_path(r"^ws/raise/(?P<where>\w+)/$", consumers.RaisingConsumer.as_handler()),
    re_path(r"^ws/reject/$", consumers.RejectingConsumer.as_handler()),
    re_path(r"^ws/echo/$", consumers.EchoConsumer.as_handler()),
]
