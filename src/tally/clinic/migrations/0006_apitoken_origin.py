"""Each API token records how it was obtained (ApiToken.origin), so that a password change can
revoke the tokens the old password signed in for and keep the ones `tally createtoken` issued.

Tokens issued before this migration have no record of it. Their label tells most of them apart:
POST /auth/token has labelled every token it issued "api" since it was written, and the command
line labels its own "command line", "tally demo" or the --label given. So a token labelled
anything else is marked `command_line`; one labelled "api" stays `password`, the field's default,
even though `tally createtoken --label api` may have made it. That is the conservative reading:
a script token revoked by mistake costs a new `tally createtoken`, a password token kept by
mistake keeps a credential that a changed password was meant to end."""

from django.db import migrations, models


def mark_command_line_tokens(apps, schema_editor):
    ApiToken = apps.get_model("clinic", "ApiToken")
    ApiToken.objects.exclude(label="api").update(origin="command_line")


class Migration(migrations.Migration):

    dependencies = [
        ("clinic", "0005_no_truncate_triggers"),
    ]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="origin",
            field=models.CharField(
                choices=[("password", "signed in with a password (POST /auth/token)"),
                         ("command_line", "issued on the command line (tally createtoken)")],
                default="password", max_length=20),
        ),
        migrations.RunPython(mark_command_line_tokens, migrations.RunPython.noop),
    ]
