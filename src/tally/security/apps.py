from django.apps import AppConfig


class SecurityConfig(AppConfig):
    name = "tally.security"
    label = "security"
    verbose_name = "Sign-in security"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the receivers)
