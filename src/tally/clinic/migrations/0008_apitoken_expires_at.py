"""An API token's expiry (ApiToken.expires_at): tokens signed in with a password end
TALLY_TOKEN_MAX_HOURS after they were issued; `tally createtoken` ones have none unless asked.

Tokens issued before this migration get the expiry they would have had: a password token ends
its lifetime (TALLY_TOKEN_MAX_HOURS, 12 by default) after its `created_at`, so one older than
that is refused from now on and its client signs in again; a command-line token keeps none.
Leaving the password ones without an expiry would keep exactly the standing keys this field
is meant to end (a front-desk token copied off a machine months ago), and NULL then stays the
mark of a token no password was asked for. Those labelled "api" that `tally createtoken --label
api` made are password tokens since 0006 (the cautious reading), so they expire too: a new
`tally createtoken` replaces one."""

import datetime as dt

from django.conf import settings
from django.db import migrations, models


def expire_password_tokens(apps, schema_editor):
    ApiToken = apps.get_model("clinic", "ApiToken")
    lifetime = dt.timedelta(hours=settings.TALLY_TOKEN_MAX_HOURS)
    ApiToken.objects.filter(origin="password", expires_at__isnull=True).update(
        expires_at=models.F("created_at") + lifetime)


def keep_command_line_expiries(apps, schema_editor):
    """Undoing: the earlier release has no expiry, and 0008 gives one back only to password
    tokens, so a `tally createtoken --expires-hours` token still live would work for ever after
    going down and up again. Refuse, naming them, until they are revoked or have expired."""
    from django.core.management.base import CommandError
    from django.utils import timezone

    ApiToken = apps.get_model("clinic", "ApiToken")
    ids = list(ApiToken.objects.filter(origin="command_line", revoked_at__isnull=True,
                                       expires_at__gt=timezone.now()).order_by("id").values_list("id", flat=True))
    if ids:
        named = ", ".join(f"token {pk}" for pk in ids)
        raise CommandError(f"cannot undo clinic.0008_apitoken_expires_at: {named} from `tally createtoken "
                           f"--expires-hours` would never expire in the earlier release; revoke them first "
                           f"(tally revoketoken ID). It stays applied.")


class Migration(migrations.Migration):

    dependencies = [
        ("clinic", "0007_invoice_line_sessions_left"),
    ]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(expire_password_tokens, keep_command_line_expiries),
    ]
