from __future__ import annotations

from urllib.parse import quote

from django.test import Client
from django.urls import reverse


def test_it_signs_in_with_a_password_and_lands_on_today(desk, clinic):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/login/")
    assert page.status_code == 200
    token = page.cookies["csrftoken"].value
    response = client.post("/login/", {"username": "frank", "password": "correct horse battery staple",
                                       "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"] == reverse("staff:today")
    assert client.get(reverse("staff:today")).status_code == 200


def test_it_refuses_a_wrong_password_on_the_form(desk, clinic):
    response = Client().post("/login/", {"username": "frank", "password": "nope"})
    assert response.status_code == 200
    assert b"enter a correct username and password" in response.content


def test_it_refuses_a_post_without_csrf_token(desk, clinic):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": "frank", "password": "correct horse battery staple"})
    assert response.status_code == 403


def test_sign_out_is_a_post_and_ends_the_session(desk_client):
    assert desk_client.get("/logout/").status_code == 405
    response = desk_client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == reverse("staff:login")
    assert desk_client.get(reverse("staff:today")).status_code == 302


def test_home_sends_signed_in_staff_to_today_and_others_to_sign_in(desk_client, clinic):
    assert desk_client.get("/")["Location"] == reverse("staff:today")
    assert Client().get("/")["Location"] == reverse("staff:login")


def test_navigation_shows_what_the_role_may_use(owner_client, desk_client, practitioner_client):
    owner_page = owner_client.get(reverse("staff:today")).content.decode()
    desk_page = desk_client.get(reverse("staff:today")).content.decode()
    practitioner_page = practitioner_client.get(reverse("staff:today")).content.decode()
    for label in ("Today", "Patients", "Clinic audit", "Catalog", "Staff</a>"):
        assert label in owner_page
    assert "Clinic audit" in desk_page and "Catalog" not in desk_page
    assert "Clinic audit" not in practitioner_page and "Catalog" not in practitioner_page
    assert "Book a visit" not in practitioner_page


def test_a_user_name_too_long_to_be_anyones_is_refused_on_the_form(desk, clinic):
    """Found by the form fuzzing on PostgreSQL: a 300-character name reached authenticate(),
    and django-axes' record of the failure (a column of 255) made a 500."""
    from axes.models import AccessAttempt

    response = Client().post("/login/", {"username": "a" * 300, "password": "nope"})
    assert response.status_code == 200
    assert b"at most 150 characters" in response.content
    assert not AccessAttempt.objects.filter(username__startswith="aaaa").exists()


def test_an_htmx_request_after_the_session_ended_sends_the_whole_page_to_sign_in(patient, sold_pack, clinic):
    """Not a 302 that the browser follows inside the request, whose sign-in page htmx then
    swapped into the chart or the investigation, under the patient's name, at the sign-in URL."""
    client = Client()
    chart = reverse("staff:chart", args=[patient.pk])
    investigation = reverse("staff:investigation", args=[sold_pack.pk])
    for method, url, target in [("get", f"{chart}?tab=invoices", "chart-tab"),
                                ("get", f"{investigation}?expected_used=2", "investigation"),
                                ("post", reverse("staff:fix", args=[sold_pack.pk]), "investigation")]:
        response = getattr(client, method)(url, headers={"HX-Request": "true", "HX-Target": target,
                                                         "HX-Current-URL": f"http://testserver{chart}"})
        assert response.status_code == 204, (method, url)
        assert response["HX-Redirect"] == f"{reverse('staff:login')}?next={quote(chart, safe='/')}"
    # Without htmx, as before: a redirect to sign in that comes back to the page.
    assert Client().get(chart)["Location"] == f"{reverse('staff:login')}?next={quote(chart, safe='/')}"


def test_an_htmx_post_with_a_stale_csrf_token_reloads_the_page_and_says_nothing_was_saved(desk, sold_pack, clinic):
    """Signing in again in another tab rotates the CSRF token; a fix button on a page opened
    before then was refused (403), and htmx, which swaps no 403, showed nothing at all."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(desk)
    client.get(reverse("staff:investigation", args=[sold_pack.pk]))  # sets the CSRF cookie
    fix = reverse("staff:fix", args=[sold_pack.pk])
    response = client.post(fix, {"action": "adjust", "params": "{}"},
                           headers={"HX-Request": "true", "X-CSRFToken": "stale" * 8})
    assert response.status_code == 204 and response["HX-Refresh"] == "true"
    page = client.get(reverse("staff:investigation", args=[sold_pack.pk])).content.decode()
    assert "Nothing was saved" in page
    # Without htmx the browser shows the refusal page itself, as before.
    assert client.post(fix, {"action": "adjust", "params": "{}"}).status_code == 403
