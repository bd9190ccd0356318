from django.apps import AppConfig
from django.db.backends.signals import connection_created


def add_sqlite_functions(sender, connection, **kwargs) -> None:
    """SQLite's own LOWER (and LIKE) fold ASCII letters only: `queries.UnicodeLower` calls
    Python's instead, so that a search finds 'Élodie' typed 'élodie', as on PostgreSQL."""
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            "tally_lower", 1, lambda text: text.lower() if isinstance(text, str) else text, deterministic=True)


class ClinicConfig(AppConfig):
    name = "tally.clinic"
    label = "clinic"
    verbose_name = "Clinic"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        connection_created.connect(add_sqlite_functions, dispatch_uid="tally_sqlite_functions")
