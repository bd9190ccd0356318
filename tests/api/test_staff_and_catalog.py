"""The caller, staff, clinic settings, services and package templates."""

import pytest

from .conftest import assert_error


def test_me_is_the_caller(practitioner_api, practitioner):
    body = practitioner_api.get("/me").json()
    assert body == {"id": practitioner.pk, "name": "Pat Needle", "role": "practitioner", "username": "pat"}


def test_the_staff_list_names_everyone_active(desk_api, owner, desk, practitioner):
    body = desk_api.get("/staff").json()
    assert {s["id"] for s in body["items"]} == {owner.pk, desk.pk, practitioner.pk}
    assert body["next"] is None


def test_anyone_reads_the_clinic_settings(practitioner_api):
    assert practitioner_api.get("/clinic").json()["time_zone"] == "America/New_York"


def test_an_owner_changes_the_clinic_settings(owner_api):
    response = owner_api.patch("/clinic", {"name": "Needle & Co", "no_show_uses_session": True})
    assert response.status_code == 200
    assert response.json()["name"] == "Needle & Co"
    assert response.json()["no_show_uses_session"] is True


def test_it_refuses_clinic_changes_from_the_front_desk(desk_api):
    assert_error(desk_api.patch("/clinic", {"name": "Mine now"}), 403, "forbidden")


@pytest.mark.parametrize("body, field", [({"time_zone": "Mars/Olympus"}, "time_zone"),
                                         ({"name": None}, "name"), ({"currency": "DOLLARS"}, "currency")])
def test_it_refuses_bad_clinic_settings(owner_api, body, field):
    assert_error(owner_api.patch("/clinic", body), 422, "validation_error", field)


def test_an_owner_adds_a_service(owner_api):
    response = owner_api.post("/services", {"name": "Cupping", "duration_minutes": 30, "price": 45})
    assert response.status_code == 201
    assert response.json()["price"] == "45.00"
    assert response.json()["active"] is True


def test_it_refuses_catalog_changes_from_the_front_desk(desk_api, acu60):
    assert_error(desk_api.post("/services", {"name": "Cupping", "duration_minutes": 30, "price": "45"}),
                 403, "forbidden")
    assert_error(desk_api.patch(f"/services/{acu60.pk}", {"price": "1.00"}), 403, "forbidden")


@pytest.mark.parametrize("price", ["NaN", "Infinity", "-1.00", "1.005", "abc", "1e400", 1e308, True,
                                   "99999999999999999999"])
def test_it_refuses_a_bad_price(owner_api, price):
    response = owner_api.post("/services", {"name": "Cupping", "duration_minutes": 30, "price": price})
    assert_error(response, 422, "validation_error", "price")


@pytest.mark.parametrize("price", ["-0", "-0.00", -0.0])
def test_a_negative_zero_price_is_zero(owner_api, price):
    """Answered as it is read back: "0.00", never "-0.00"."""
    created = owner_api.post("/services", {"name": "Free check", "duration_minutes": 15, "price": price})
    assert created.status_code == 201 and created.json()["price"] == "0.00"
    package = owner_api.post("/packages", {"name": "Free", "price": price, "sessions": 1,
                                           "service_ids": [created.json()["id"]]})
    assert package.status_code == 201 and package.json()["price"] == "0.00"


def test_it_refuses_a_huge_duration(owner_api):
    response = owner_api.post("/services", {"name": "Cupping", "duration_minutes": 10**20, "price": "1"})
    assert_error(response, 422, "validation_error", "duration_minutes")


def test_an_owner_renames_a_service(owner_api, acu60):
    response = owner_api.patch(f"/services/{acu60.pk}", {"name": "Acupuncture (60)"})
    assert response.status_code == 200
    assert response.json() == {"id": acu60.pk, "name": "Acupuncture (60)", "duration_minutes": 60,
                               "price": "95.00", "active": True}


def test_it_refuses_a_null_for_a_needed_field(owner_api, acu60):
    assert_error(owner_api.patch(f"/services/{acu60.pk}", {"active": None}), 422, "validation_error", "active")


def test_patching_an_unknown_service_is_404(owner_api):
    assert_error(owner_api.patch("/services/999", {"name": "x"}), 404, "not_found")


def test_services_are_listed_by_name_in_pages(desk_api, acu60, acu90, owner):
    first = desk_api.get("/services", limit=1).json()
    assert [s["name"] for s in first["items"]] == ["Acupuncture 60 min"]
    second = desk_api.get("/services", limit=1, cursor=first["next"]).json()
    assert [s["name"] for s in second["items"]] == ["Acupuncture 90 min"]
    assert second["next"] is None


def test_an_owner_adds_and_edits_a_package_template(owner_api, acu60, acu90):
    response = owner_api.post("/packages", {"name": "5 x Acu", "price": "400.00", "sessions": 5,
                                            "service_ids": [acu60.pk], "valid_days": 90})
    assert response.status_code == 201
    package = response.json()
    assert package["service_ids"] == [acu60.pk] and package["valid_days"] == 90
    response = owner_api.patch(f"/packages/{package['id']}", {"service_ids": [acu60.pk, acu90.pk],
                                                              "valid_days": None})
    assert response.status_code == 200
    assert response.json()["service_ids"] == sorted([acu60.pk, acu90.pk])
    assert response.json()["valid_days"] is None


def test_it_refuses_a_package_of_unknown_services(owner_api):
    response = owner_api.post("/packages", {"name": "5 x ?", "price": "1", "sessions": 5, "service_ids": [999]})
    assert_error(response, 422, "validation_error", "service_ids")


def test_anyone_lists_package_templates(practitioner_api, ten_pack, acu60):
    items = practitioner_api.get("/packages").json()["items"]
    assert items[0]["id"] == ten_pack.pk and items[0]["price"] == "800.00"


def test_limits_out_of_range_are_refused(desk_api):
    for limit in (0, 501, "x"):
        assert_error(desk_api.get("/services", limit=limit), 422, "validation_error", "limit")


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGpzb24", "WzFd", "WyJ4IiwgIngiXQ"])
def test_a_bad_cursor_is_refused(desk_api, cursor):
    assert_error(desk_api.get("/services", cursor=cursor), 422, "validation_error", "cursor")
