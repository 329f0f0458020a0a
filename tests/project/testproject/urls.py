from django.urls import path

from testproject import views

urlpatterns = [
    path("publish/<str:group>/", views.publish),
]
