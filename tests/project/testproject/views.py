from asgiref.sync import async_to_sync
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from django_ws_client.transport import get_channel_layer


@csrf_exempt
def publish(request: HttpRequest, group: str) -> JsonResponse:
    """A plain sync Django view publishing to a group."""
    async_to_sync(get_channel_layer().group_send)(
        group, {"type": "relay", "text": request.POST.get("text", ""), "from": "view"}
    )
    return JsonResponse({"ok": True})
