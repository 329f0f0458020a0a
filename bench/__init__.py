"""Side-by-side benchmark of django-ws against Django Channels + channels_redis and a
bare ``websockets`` reference. Run it with ``python -m bench run``; see README.md."""
