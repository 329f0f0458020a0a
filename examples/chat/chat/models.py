from django.db import models


class Room(models.Model):
    """Chat rooms; its Meta carries the permission the seed's consumer checks."""

    name = models.CharField(max_length=50, unique=True)

    class Meta:
        permissions = [("connect_to_chat", "Can connect to the chat")]

    def __str__(self) -> str:
        return self.name
