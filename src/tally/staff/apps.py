from django.apps import AppConfig


class StaffConfig(AppConfig):
    name = "tally.staff"
    label = "staff_pages"
    verbose_name = "Staff pages"
