"""ChannelsLiveServerTestCase against the test project, run by `manage.py test`
(tests/e2e/test_tutorial.py starts it): the websocket server's processes read the test
database, views publish to it, static files are served, all at live_server_url."""

import json
import urllib.request

from django.contrib.auth import get_user_model
from websockets.sync.client import connect

from django_ws_client.testing import ChannelsLiveServerTestCase


class LiveServerTests(ChannelsLiveServerTestCase):
    def test_websocket_consumer_reads_the_test_database(self):
        user = get_user_model().objects.create(username="only-in-the-test-database")
        with connect(f"{self.live_server_ws_url}/ws/user/{user.pk}/") as ws:
            self.assertEqual(json.loads(ws.recv(5)), {"username": "only-in-the-test-database"})

    def test_a_view_publishes_to_a_websocket_on_the_same_address(self):
        with connect(f"{self.live_server_ws_url}/ws/group/news/") as ws:
            json.loads(ws.recv(5))  # the consumer's hello
            request = urllib.request.Request(
                f"{self.live_server_url}/publish/news/", data=b"text=from-a-view"
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                self.assertEqual(response.status, 200)
            self.assertEqual(json.loads(ws.recv(5))["text"], "from-a-view")

    def test_static_files_are_served(self):
        with urllib.request.urlopen(f"{self.live_server_url}/static/hello.txt") as response:
            self.assertEqual(response.read(), b"served by the live server\n")
