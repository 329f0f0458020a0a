"""``manage.py create_chat_user NAME PASSWORD``: a user allowed into the chat."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create (or update) a user with the chat.connect_to_chat permission."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("password")

    def handle(self, *args, username, password, **options):
        user, created = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        user.save()
        user.user_permissions.add(Permission.objects.get(codename="connect_to_chat"))
        verb = "created" if created else "updated"
        self.stdout.write(f"{verb} {username!r} with permission chat.connect_to_chat")
