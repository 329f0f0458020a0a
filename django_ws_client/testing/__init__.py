"""Test helpers for projects that use django-ws (Channels' ``channels.testing``).

* :class:`WebsocketCommunicator` (:mod:`.communicator`): a consumer in-process, with
  Channels' methods and behaviour.
* :class:`LiveServer` (:mod:`.live`): a real ``websockets_server`` on free ports; the
  pytest fixture ``live_websockets_server`` wraps it.
* :class:`ChannelsLiveServerTestCase` (:mod:`.live`): pages and websockets at
  ``live_server_url``, for Selenium tests.
"""

from django_ws_client.testing.communicator import WebsocketCommunicator
from django_ws_client.testing.live import ChannelsLiveServerTestCase, LiveServer

__all__ = ["ChannelsLiveServerTestCase", "LiveServer", "WebsocketCommunicator"]
