"""The audit trail: one AuditEvent per change, written in the action's transaction."""

from __future__ import annotations

import contextvars
import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.forms.models import model_to_dict
from django.utils import timezone

from .models import AuditEvent, Staff

# Set by the front ends (API, staff pages) for the duration of a request.
current_ip: contextvars.ContextVar[str | None] = contextvars.ContextVar("tally_current_ip", default=None)


def snapshot(obj: models.Model | None, exclude: tuple[str, ...] = ()) -> dict[str, Any] | None:
    if obj is None:
        return None
    data = model_to_dict(obj, exclude=[*exclude, "password"])
    data["id"] = obj.pk
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))


def record(
    action: str,
    *,
    actor: Staff | None,
    obj: models.Model | None = None,
    object_type: str | None = None,
    patient_id: int | None = None,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        at=timezone.now(),
        actor=actor,
        role=getattr(actor, "role", "") or "",
        action=action,
        object_type=object_type or (obj._meta.model_name if obj is not None else ""),
        object_id=str(obj.pk) if obj is not None else "",
        patient_id=patient_id,
        before=before,
        after=after,
        ip=current_ip.get(),
    )
