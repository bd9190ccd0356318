from __future__ import annotations

from decimal import Decimal

from django.urls import reverse

from tally.clinic.models import Package, PatientPackage, Service


def test_owner_creates_and_renames_a_service_and_sees_what_it_affects(owner_client, acu60, sold_pack):
    response = owner_client.post(reverse("staff:service_new"),
                                 {"name": "Cupping", "duration_minutes": 30, "price": "45.00", "active": "on"})
    assert response.status_code == 302
    assert Service.objects.filter(name="Cupping", price=Decimal("45.00")).exists()

    url = reverse("staff:service_edit", args=[acu60.pk])
    page = owner_client.get(url).content.decode()
    assert "Will not change" in page and "1 sold packages include it" in page
    response = owner_client.post(url, {"name": "Acupuncture (1 hour)", "duration_minutes": 60, "price": "99.00",
                                       "active": "on"})
    assert response.status_code == 302
    acu60.refresh_from_db()
    assert acu60.name == "Acupuncture (1 hour)" and acu60.price == Decimal("99.00")
    assert PatientPackage.objects.get(pk=sold_pack.pk).eligible_services.filter(pk=acu60.pk).exists()


def test_owner_edits_a_package_template_without_touching_sold_packages(owner_client, ten_pack, sold_pack, acu60,
                                                                       acu90):
    url = reverse("staff:package_edit", args=[ten_pack.pk])
    assert "packages already sold keep what they were sold with" in owner_client.get(url).content.decode()
    response = owner_client.post(url, {"name": "10 x Acupuncture", "price": "850.00", "sessions": 10,
                                       "services": [acu60.pk, acu90.pk], "valid_days": "365", "active": "on"})
    assert response.status_code == 302
    ten_pack.refresh_from_db()
    assert ten_pack.price == Decimal("850.00") and ten_pack.valid_days == 365
    sold_pack.refresh_from_db()
    assert sold_pack.name == "10 x Acupuncture 60" and sold_pack.price == Decimal("800.00")


def test_owner_creates_a_package(owner_client, acu60):
    response = owner_client.post(reverse("staff:package_new"), {"name": "5 x Acu", "price": "420.00", "sessions": 5,
                                                                "services": [acu60.pk], "active": "on"})
    assert response.status_code == 302
    assert Package.objects.get(name="5 x Acu").services.get() == acu60


def test_a_package_without_services_is_a_form_error(owner_client):
    response = owner_client.post(reverse("staff:package_new"), {"name": "Empty", "price": "1.00", "sessions": 1})
    assert response.status_code == 422
    assert not Package.objects.filter(name="Empty").exists()


def test_front_desk_cannot_edit_the_catalog(desk_client, acu60):
    response = desk_client.post(reverse("staff:service_edit", args=[acu60.pk]),
                                {"name": "Hacked", "duration_minutes": 60, "price": "1.00"})
    assert response.status_code == 403
    acu60.refresh_from_db()
    assert acu60.name == "Acupuncture 60 min"


def test_catalog_shows_prices_in_the_clinic_currency(owner_client, acu60, clinic):
    clinic.currency = "EUR"
    clinic.save()
    assert "€95.00" in owner_client.get(reverse("staff:catalog")).content.decode()


def test_a_new_package_left_off_sale_is_not_on_sale(owner_client, desk_client, patient, acu60):
    """The New package page asks 'On sale'; unticked, the package was put on sale all the same and
    the front desk could sell it."""
    response = owner_client.post(reverse("staff:package_new"), {"name": "Draft pack", "price": "100.00",
                                                                "sessions": 2, "services": [acu60.pk]})
    assert response.status_code == 302
    assert Package.objects.get(name="Draft pack").active is False
    assert "Draft pack" not in desk_client.get(reverse("staff:sell", args=[patient.pk])).content.decode()
