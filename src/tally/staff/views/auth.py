"""Signing in and out (session auth) and the home page."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse, reverse_lazy

from tally.clinic.models import ClinicSettings


class SignInView(auth_views.LoginView):
    template_name = "staff/auth/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return reverse("staff:today")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["clinic"] = ClinicSettings.load()
        return context


class SignOutView(auth_views.LogoutView):
    """POST only (Django's LogoutView): a link cannot sign anyone out."""

    next_page = reverse_lazy("staff:login")  # type: ignore[assignment]  # a lazy str is what Django expects


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("staff:login")
    return redirect("staff:today")
