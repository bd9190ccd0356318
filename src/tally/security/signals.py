"""Receivers: sessions begin and end with sign-in and sign-out, a deactivated staff member
loses every session and token, a changed password ends the tokens it signed in for, and every
sign-in lockout is logged and audited."""

from __future__ import annotations

import logging
from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from tally.clinic.actions.two_factor import must_use_two_factor
from tally.clinic.audit import current_ip, record, request_ip
from tally.clinic.models import ApiToken, Staff
from tally.clinic.models.staff import TokenOrigin

from . import sessions
from .lockout import clear_failures
from .middleware import second_step_for

log = logging.getLogger("tally.security")


@receiver(user_logged_in, dispatch_uid="tally.security.session_begins")
def session_begins(sender: Any, request: HttpRequest | None, user: Staff, **kwargs: Any) -> None:
    if request is None or not hasattr(request, "session"):
        return
    sessions.stamp_sign_in(request)
    sessions.register(request, user.pk)
    if second_step_for(user) is None:
        clear_failures(request, user.get_username())  # else once the code step is passed


@receiver(user_logged_out, dispatch_uid="tally.security.sign_out_everywhere")
def sign_out_everywhere(sender: Any, request: HttpRequest | None, user: Staff | None, **kwargs: Any) -> None:
    """Signing out ends every session of that staff member, on every device, and revokes
    their API tokens (issue 5: a sign-out is a sign-out everywhere). An integration that
    must outlive a person's sign-outs uses a staff account of its own.

    Not for a session that never passed its second step (the password alone, the code not
    yet given): whoever knows only the password could otherwise sign the staff member out
    everywhere and revoke their tokens at will. logout() still ends that one session."""
    if user is None or half_signed_in(user):
        return
    with request_ip(request):
        sign_out_everywhere_now(user)


def sign_out_everywhere_now(user: Staff) -> tuple[int, int]:
    """What signing out does, on the web or over the API (POST /auth/sign-out): every API
    token of `user` revoked (one audit event) and every web session ended. The numbers of each."""
    return revoke_tokens(user, cause="sign_out", by=user), sessions.end_all_sessions(user.pk)


def half_signed_in(user: Any) -> bool:
    """Signed in with the password only, while a second step is still due (the code, or an
    owner's two-factor set-up)."""
    is_verified = getattr(user, "is_verified", None)  # django-otp's middleware adds it
    return is_verified is not None and not is_verified() and second_step_for(user) is not None


def revoke_tokens(staff: Staff, *, cause: str, by: Staff | None, origin: str | None = None) -> int:
    """Revoke every live token of `staff` (or only those of one `origin`), with one audit event
    saying how many and why: an integration that suddenly gets 401s can be explained from the
    audit log."""
    with transaction.atomic():
        live = ApiToken.objects.filter(staff=staff, revoked_at__isnull=True)
        if origin is not None:
            live = live.filter(origin=origin)
        count = live.update(revoked_at=timezone.now())
        if count:
            record("token.revoke", actor=by, obj=staff, object_type="staff",
                   after={"tokens": count, "cause": cause})
    return count


@receiver(post_save, sender=Staff, dispatch_uid="tally.security.deactivated_staff_signed_out")
def deactivated_staff_signed_out(sender: Any, instance: Staff, created: bool, **kwargs: Any) -> None:
    """However a staff member is deactivated (tally deactivate, the admin, a shell), their
    sessions end and their tokens are revoked now. (Each request also refuses an inactive user.)"""
    if created or instance.is_active:
        return
    revoke_tokens(instance, cause="deactivated", by=None)
    sessions.end_all_sessions(instance.pk)


@receiver(post_save, sender=Staff, dispatch_uid="tally.security.password_change_revokes_password_tokens")
def password_change_revokes_password_tokens(sender: Any, instance: Staff, created: bool, **kwargs: Any) -> None:
    """However a password is changed or disabled (the admin, `tally changepassword`, a shell),
    the API tokens obtained with the old one (POST /auth/token) are revoked now, as Django's
    session auth hash ends the staff member's other web sessions. Tokens from `tally createtoken`
    were never tied to the password and keep working; signing out still revokes them all."""
    if created or not password_replaced(instance):
        return
    instance.password_disabled = False  # handled: a later save of this object revokes nothing
    revoke_tokens(instance, cause="password_change", by=None, origin=TokenOrigin.PASSWORD)


_NEEDED_TWO_FACTOR = "_tally_needed_two_factor"


@receiver(pre_save, sender=Staff, dispatch_uid="tally.security.note_two_factor_requirement")
def note_two_factor_requirement(sender: Any, instance: Staff, **kwargs: Any) -> None:
    """Whether the staff member had to sign in with a code before this save (a role change, or
    admin status given, may make them)."""
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and not {"role", "is_staff", "is_superuser"} & set(update_fields):
        setattr(instance, _NEEDED_TWO_FACTOR, True)  # last_login at each sign-in: nothing to read
        return
    stored = Staff.objects.filter(pk=instance.pk).first() if instance.pk is not None else None
    setattr(instance, _NEEDED_TWO_FACTOR, stored is None or must_use_two_factor(stored))


@receiver(post_save, sender=Staff, dispatch_uid="tally.security.promotion_revokes_codeless_tokens")
def promotion_revokes_codeless_tokens(sender: Any, instance: Staff, created: bool, **kwargs: Any) -> None:
    """Made an owner (or given the admin), a staff member must sign in with a two-factor code
    (TALLY_OWNER_2FA_REQUIRED): the API tokens their password got without one are revoked now,
    however the role changed (the admin, a shell), as the staff site asks for the code or its
    set-up at the next request. Otherwise those tokens held the owner's powers, no code ever
    given, until they expired. Tokens from `tally createtoken` never needed a code and keep working."""
    needed_before = getattr(instance, _NEEDED_TWO_FACTOR, True)
    setattr(instance, _NEEDED_TWO_FACTOR, True)  # handled: a later save of this object revokes nothing
    if created or needed_before or not must_use_two_factor(instance):
        return
    revoke_tokens(instance, cause="two_factor_required", by=None, origin=TokenOrigin.PASSWORD)


def password_replaced(staff: Staff) -> bool:
    """Whether this save stores a new password or disables it. Django keeps the new raw password
    in `_password` from set_password() until the save has run its password_changed() hooks, and
    clears it first when it only re-hashes the same password at sign-in with a newer hasher
    (AbstractBaseUser.check_password: "Password hash upgrades shouldn't be considered password
    changes"), so a re-hash revokes nothing."""
    return getattr(staff, "_password", None) is not None or staff.password_disabled


@receiver(user_locked_out, dispatch_uid="tally.security.lockout_audited")
def lockout_audited(sender: Any, request: HttpRequest, username: str | None, ip_address: str | None,
                    **kwargs: Any) -> None:
    """django-axes logs the lockout; the clinic's audit log gets it too. Sent when a pause
    starts and for each attempt refused during it."""
    staff = Staff.objects.filter(username=username).first() if username else None
    log.warning("Sign-in paused for %r from %s", username, ip_address)
    token = current_ip.set(ip_address)
    try:
        with transaction.atomic():
            record("auth.lockout", actor=None, obj=staff, object_type="staff",
                   after={"username": username, "ip_address": ip_address,
                          "path": getattr(request, "path", ""),
                          "failures": getattr(request, "axes_failures_since_start", None)})
    finally:
        current_ip.reset(token)
