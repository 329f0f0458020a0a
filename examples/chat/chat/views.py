from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from django_ws_client.groups import GroupMessage
from django_ws_client.transport import get_channel_layer


@login_required
def chat_page(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/chat.html", {"room": request.GET.get("room", "")})


@require_POST
@permission_required("chat.connect_to_chat", raise_exception=True)
def announce(request: HttpRequest) -> JsonResponse:
    """Publish from an ordinary Django view to everyone in the seed's room."""
    text = request.POST.get("message", "")
    async_to_sync(get_channel_layer().group_send)(
        "chat_room_a",
        GroupMessage("chat_message", message=text, params='{"sender": "announcement"}'),
    )
    return JsonResponse({"sent": text})
