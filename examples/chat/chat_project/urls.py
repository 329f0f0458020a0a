from chat import views
from django.contrib.auth import views as auth_views
from django.urls import path

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("announce/", views.announce, name="announce"),
    path("login/", auth_views.LoginView.as_view(template_name="chat/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
