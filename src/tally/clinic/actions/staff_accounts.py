"""Staff accounts and tokens as the clinic's own command line creates them
(`tally createuser`, `tally createtoken`, the demo loader).

Whoever runs the command line holds the server and its database, so these act with
`acting_user=None` and need no password; sign-in over HTTP is `staff.do_issue_token`.
The same password validators apply, and each writes an audit event in its transaction.
"""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.utils import timezone

from ..audit import record
from ..errors import Conflict, Invalid, NotFound
from ..models import ApiToken, Staff
from ..models.staff import Role, TokenOrigin
from .common import clinic_action, max_length_of, optional_text

# The columns' lengths: PostgreSQL refuses a longer value with a DataError (SQLite keeps it).
USERNAME_MAX_LENGTH = max_length_of(Staff, "username")
NAME_MAX_LENGTH = max_length_of(Staff, "first_name")


@clinic_action
def do_create_staff(
    *,
    acting_user: Staff | None,
    username: str,
    role: str,
    password: str | None,
    first_name: str = "",
    last_name: str = "",
    validate: bool = True,
) -> Staff:
    """Add a staff member. Owners also get the Django admin (the owner's back office).
    With no password, the account cannot sign in on the web or with POST /auth/token: an
    integration's, used only with tokens from `tally createtoken`."""
    # NFKC, as Django's sign-in form reads a typed name: a name sent decomposed (e + ´) would
    # otherwise be a second, look-alike account that could never sign in on the web.
    username = Staff.normalize_username(optional_text(username, "username", USERNAME_MAX_LENGTH))
    if not username:
        raise Invalid("A user name is required.", fields={"username": "required"})
    if not username.isprintable():
        raise Invalid("A user name cannot hold control characters such as line breaks.",
                      fields={"username": "no control characters"})
    if role not in Role.values:
        raise Invalid(f"Unknown role {role!r}: use one of {', '.join(Role.values)}.", fields={"role": "unknown"})
    if Staff.objects.filter(username__iexact=username).exists():
        raise Conflict(f"A staff member named {username!r} already exists.", fields={"username": "taken"})
    user = Staff(username=username, role=role, first_name=optional_text(first_name, "first_name", NAME_MAX_LENGTH),
                 last_name=optional_text(last_name, "last_name", NAME_MAX_LENGTH), is_staff=role == Role.OWNER,
                 is_superuser=role == Role.OWNER)
    if password is None:
        user.set_unusable_password()
    else:
        if validate:
            try:
                validate_password(password, user=user)
            except ValidationError as exc:
                raise Invalid("Password refused: " + " ".join(exc.messages),
                              fields={"password": "too weak"}) from None
        user.set_password(password)
    user.save()
    record("staff.create", actor=acting_user, obj=user,
           after={"username": user.username, "role": user.role, "name": user.get_full_name()})
    return user


MAX_TOKEN_HOURS = 876000  # 100 years


@clinic_action
def do_grant_token(*, acting_user: Staff | None, username: str, label: str = "command line",
                   expires_hours: int | None = None) -> tuple[ApiToken, str]:
    """Issue an API token for a staff member without their password (command line only).
    Only the token's hash is kept, so the raw token is returned once. It never expires (a
    script's; revoking ends it) unless `expires_hours` gives it a lifetime."""
    if expires_hours is not None and expires_hours < 1:
        raise Invalid("A token's lifetime is at least 1 hour.", fields={"expires_hours": "at least 1"})
    if expires_hours is not None and expires_hours > MAX_TOKEN_HOURS:
        # Past any calendar (year 9999) the expiry cannot be written at all.
        raise Invalid(f"A token's lifetime is at most {MAX_TOKEN_HOURS} hours (100 years); for a token that "
                      "never expires, leave out --expires-hours.", fields={"expires_hours": f"at most {MAX_TOKEN_HOURS}"})
    staff = Staff.objects.filter(username=Staff.normalize_username(username)).first()
    if staff is None:
        raise NotFound(f"No staff member named {username!r}.")
    if not staff.is_active:
        raise Conflict(f"{staff.username} is deactivated; reactivate them before issuing a token.")
    label = optional_text(label, "label", max_length_of(ApiToken, "label"))
    expires_at = timezone.now() + dt.timedelta(hours=expires_hours) if expires_hours is not None else None
    token, raw = ApiToken.issue(staff, label=label, origin=TokenOrigin.COMMAND_LINE, expires_at=expires_at)
    record("token.issue", actor=acting_user, obj=token,
           after={"label": label, "staff_id": staff.pk, "origin": token.origin,
                  "expires_at": expires_at.isoformat() if expires_at is not None else None})
    return token, raw


@clinic_action
def do_revoke_token(*, acting_user: Staff | None, token_id: int) -> tuple[ApiToken, bool]:
    """Revoke one API token (`tally revoketoken`): a script's token that leaked, ended without
    deactivating its staff account or signing anyone out. Whether it was live until now; a
    token already revoked is left as it is, and nothing is recorded again."""
    token = ApiToken.objects.select_for_update().select_related("staff").filter(pk=token_id).first()
    if token is None:
        raise NotFound(f"No API token {token_id}.")
    if token.revoked_at is not None:
        return token, False
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    # The shape of the sign-out's and deactivation's revocations (security.signals.revoke_tokens).
    record("token.revoke", actor=acting_user, obj=token.staff, object_type="staff",
           after={"tokens": 1, "cause": "revoketoken", "token_id": token.pk})
    return token, True


@clinic_action
def do_deactivate_staff(*, acting_user: Staff | None, username: str) -> Staff:
    """Stop a staff member from signing in. Their sessions end and their API tokens are revoked
    at once (tally.security.signals does it on save, so deactivating from the admin does too);
    their history stays."""
    staff = Staff.objects.filter(username=Staff.normalize_username(username)).first()
    if staff is None:
        raise NotFound(f"No staff member named {username!r}.")
    if not staff.is_active:
        raise Conflict(f"{staff.username} is already deactivated.")
    staff.is_active = False
    staff.save(update_fields=["is_active"])
    record("staff.deactivate", actor=acting_user, obj=staff, before={"is_active": True}, after={"is_active": False})
    return staff


__all__ = ["do_create_staff", "do_deactivate_staff", "do_grant_token", "do_revoke_token"]
