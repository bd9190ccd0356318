from django.apps import AppConfig


class ClinicConfig(AppConfig):
    name = "tally.clinic"
    label = "clinic"
    verbose_name = "Clinic"
    default_auto_field = "django.db.models.BigAutoField"
