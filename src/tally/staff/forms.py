"""Forms parse and check the shape of input; the do_* actions decide everything else."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, TypeVar

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.validators import MaxLengthValidator
from django.utils import timezone

from tally.clinic.models import Appointment, Package, Service, Staff
from tally.clinic.models.patients import Patient, parse_patient_number
from tally.clinic.models.scheduling import AppointmentStatus
from tally.clinic.queries import practitioners
from tally.clinic.rules import YEARS

PAYMENT_METHODS = [("card", "Card"), ("cash", "Cash"), ("bank transfer", "Bank transfer"), ("other", "Other")]


def active_services():
    return Service.objects.filter(active=True).order_by("name")


class StaffChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Staff) -> str:
        return obj.display_name


class ServiceChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Service) -> str:
        return f"{obj.name} ({obj.duration_minutes} min, {obj.price})"


F = TypeVar("F", bound=forms.Field)


def typed_field(form: forms.BaseForm, name: str, kind: type[F]) -> F:
    """A form's field as the kind it was declared (for setting its choices at run time)."""
    field = form.fields[name]
    if not isinstance(field, kind):
        raise TypeError(f"{name} is a {type(field).__name__}, not a {kind.__name__}")
    return field


def model_field(form: forms.BaseForm, name: str) -> forms.ModelChoiceField:
    return typed_field(form, name, forms.ModelChoiceField)


class ClinicDateField(forms.DateField):
    """A date in the years a clinic deals with (rules.YEARS): 9999-12-31 is a valid date, but
    the day after it, or its midnight in UTC, is not one."""

    widget = forms.DateInput(attrs={"type": "date"})

    def to_python(self, value: Any) -> dt.date | None:
        day = super().to_python(value)
        if day is not None and day.year not in YEARS:
            raise forms.ValidationError(f"Enter a date between {YEARS[0]} and {YEARS[-1]}.", code="invalid")
        return day


class IdsChoiceField(forms.ModelMultipleChoiceField):
    """Refuses an id no row can have before asking the database (SQLite cannot even compare a
    number that does not fit in 64 bits)."""

    def _check_values(self, value: Any) -> Any:
        for pk in value:
            text = str(pk).strip()
            if not text.isdecimal() or not 0 < int(text) < 2**63:
                raise forms.ValidationError(self.error_messages["invalid_choice"], code="invalid_choice",
                                            params={"value": pk})
        return super()._check_values(value)  # type: ignore[misc]


def combine(day: dt.date, time: dt.time, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.combine(day, time, tzinfo=tz)


class PatientNumberField(forms.CharField):
    """A patient number as staff quote it (P-000123, 123)."""

    def clean(self, value: str) -> Patient:
        text = super().clean(value)
        number = parse_patient_number(text)
        patient = Patient.objects.filter(pk=number).first() if number is not None and number < 2**63 else None
        if patient is None:
            raise forms.ValidationError("No patient has that number (e.g. P-000123).")
        return patient


class SignInForm(AuthenticationForm):
    """Django's sign-in form, with the user name's length checked before a sign-in is tried.
    Django sets the field's max_length after building it, so nothing enforced it: a longer
    name reached authenticate(), and django-axes' record of the failure (a column of 255)
    made a 500 on PostgreSQL. No staff member's name can be that long."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["username"].validators.append(
            MaxLengthValidator(typed_field(self, "username", forms.CharField).max_length or 150))


class BookForm(forms.Form):
    patient = PatientNumberField(label="Patient number", help_text="e.g. P-000123")
    service = ServiceChoiceField(queryset=Service.objects.none())
    practitioner = StaffChoiceField(queryset=Staff.objects.none(), required=False, empty_label="— unassigned —")
    day = ClinicDateField(label="Date")
    time = forms.TimeField(label="Start time", widget=forms.TimeInput(attrs={"type": "time"}))
    duration_minutes = forms.IntegerField(label="Length (minutes)", required=False, min_value=1, max_value=1440,
                                          help_text="Leave empty for the service's usual length.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model_field(self, "service").queryset = active_services()
        model_field(self, "practitioner").queryset = practitioners()


class RescheduleForm(forms.Form):
    practitioner = StaffChoiceField(queryset=Staff.objects.none(), required=False, empty_label="— unassigned —")
    day = ClinicDateField(label="Date")
    time = forms.TimeField(label="Start time", widget=forms.TimeInput(attrs={"type": "time"}))
    duration_minutes = forms.IntegerField(label="Length (minutes)", min_value=1, max_value=1440)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model_field(self, "practitioner").queryset = practitioners()


CHARGE_CHOICES = [
    ("booked", "Charge the booked service"),
    ("other", "Charge another service"),
    ("none", "No Charges"),
]


class CheckInForm(forms.Form):
    charge = forms.ChoiceField(choices=CHARGE_CHOICES, widget=forms.RadioSelect, initial="booked",
                               label="What to charge")
    service = ServiceChoiceField(queryset=Service.objects.none(), required=False, label="Other service")
    # The choice staff confirmed after seeing the coverage warning; another choice warns again.
    confirmed = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model_field(self, "service").queryset = active_services()

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if data.get("charge") == "other" and not data.get("service"):
            self.add_error("service", "Pick the service to charge.")
        return data

    def choice_key(self) -> str:
        service = self.cleaned_data.get("service")
        charge = self.cleaned_data["charge"]
        return f"{charge}:{service.pk if charge == 'other' and service else ''}"

    def service_to_charge(self, appointment: Appointment) -> Service | None:
        """None for No Charges."""
        charge = self.cleaned_data["charge"]
        if charge == "none":
            return None
        if charge == "other":
            return self.cleaned_data["service"]
        return appointment.service


class ReasonForm(forms.Form):
    reason = forms.CharField(label="Reason", required=False, max_length=1000,
                             widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, reason_required: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = reason_required


class PatientForm(forms.Form):
    first_name = forms.CharField(max_length=100)
    last_name = forms.CharField(max_length=100)
    date_of_birth = ClinicDateField(required=False)
    email = forms.EmailField(required=False)
    phone = forms.CharField(required=False, max_length=40)


RANGE_PRESETS = [
    ("all", "All time"),
    ("today", "Today"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
    ("year", "This year"),
    ("custom", "Custom range"),
]


class ChartFilterForm(forms.Form):
    """The chart's filters. Empty means "no filter"; the range defaults to All time."""

    status = forms.ChoiceField(required=False)
    service = forms.ModelChoiceField(queryset=Service.objects.all(), required=False, empty_label="Any service")
    practitioner = StaffChoiceField(queryset=Staff.objects.none(), required=False, empty_label="Any practitioner")
    range = forms.ChoiceField(choices=RANGE_PRESETS, required=False, label="Date range")
    start = ClinicDateField(required=False, label="From")
    end = ClinicDateField(required=False, label="To")

    FILTER_FIELDS = ("status", "service", "practitioner", "range", "start", "end")

    def __init__(self, *args, status_choices: list[tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        typed_field(self, "status", forms.ChoiceField).choices = [("", "Any status"), *status_choices]
        model_field(self, "practitioner").queryset = practitioners()
        model_field(self, "service").queryset = Service.objects.order_by("name")

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        start, end = data.get("start"), data.get("end")
        if data.get("range") == "custom" and start and end and end < start:
            # Not a filter that hides every row: a mistake, said on the field (the rows stay shown).
            self.add_error("end", "The end of the range is before its start.")
        return data

    def date_bounds(self, today: dt.date) -> tuple[dt.date | None, dt.date | None]:
        """Inclusive clinic-local dates, None for open-ended."""
        preset = self.cleaned_data.get("range") or "all"
        if preset == "today":
            return today, today
        if preset == "30d":
            return today - dt.timedelta(days=29), today
        if preset == "90d":
            return today - dt.timedelta(days=89), today
        if preset == "year":
            return today.replace(month=1, day=1), today
        if preset == "custom":
            return self.cleaned_data.get("start"), self.cleaned_data.get("end")
        return None, None

    @property
    def offers_dates(self) -> bool:
        """From and To count only with a custom range, so they are shown only then: a date left
        in its box under another range would look like a filter while it filters nothing."""
        return self.data.get("range") == "custom"

    def shown_fields(self) -> list:
        return [f for f in self.visible_fields() if self.offers_dates or f.name not in ("start", "end")]

    @property
    def is_filtering(self) -> bool:
        if not self.is_valid():
            return False
        data = self.cleaned_data
        ranged = (data.get("range") or "all") != "all"
        return bool(data.get("status") or data.get("service") or data.get("practitioner") or ranged)


APPOINTMENT_STATUS_CHOICES = list(AppointmentStatus.choices)
INVOICE_STATUS_CHOICES = [("unpaid", "Unpaid"), ("partially_paid", "Partially paid"), ("paid", "Paid"),
                          ("void", "Void")]


class SellPackageForm(forms.Form):
    package = forms.ModelChoiceField(queryset=Package.objects.none(), empty_label="— choose a package —")
    use_first_session = forms.TypedChoiceField(
        label="Use first session",
        choices=[("yes", "Yes — use the first session today (the patient is treated today or already was)"),
                 ("no", "No — nothing is used at the sale")],
        widget=forms.RadioSelect,
        coerce=lambda v: v == "yes",
        error_messages={"required": "Say whether the first session is used today: choose Yes or No."},
    )
    first_session_appointment = forms.ModelChoiceField(
        queryset=Appointment.objects.none(), required=False, label="Today's visit it counts",
        empty_label="— no particular visit —",
    )
    payment_amount = forms.DecimalField(label="Amount", required=False, min_value=Decimal("0.01"),
                                        max_digits=10, decimal_places=2)
    payment_method = forms.ChoiceField(choices=PAYMENT_METHODS, required=False, label="Method")

    def __init__(self, *args, todays_visits=None, **kwargs):
        super().__init__(*args, **kwargs)
        model_field(self, "package").queryset = Package.objects.filter(active=True).order_by("name")
        model_field(self, "first_session_appointment").queryset = todays_visits if todays_visits is not None \
            else Appointment.objects.none()
        # Rendered while the view has the clinic's time zone active.
        model_field(self, "first_session_appointment").label_from_instance = (  # type: ignore[method-assign]
            lambda obj: f"{timezone.localtime(obj.starts_at):%H:%M} {obj.service.name} ({obj.get_status_display()})"
        )


class CancelPackageForm(forms.Form):
    reason = forms.CharField(max_length=1000, widget=forms.Textarea(attrs={"rows": 2}))
    refund_amount = forms.DecimalField(label="Refund amount", required=False, min_value=Decimal("0.01"),
                                       max_digits=10, decimal_places=2,
                                       help_text="Optional: what is given back, as a positive number.")
    refund_method = forms.ChoiceField(choices=PAYMENT_METHODS, required=False, label="Refund method")


class ExpiryForm(forms.Form):
    expires_on = ClinicDateField(label="Last day it can be used",
                                 help_text="It expires at the end of this day, in the clinic's time zone.")


class AddLineForm(forms.Form):
    service = ServiceChoiceField(queryset=Service.objects.none(), label="Add a service")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model_field(self, "service").queryset = active_services()


class ChargeForm(AddLineForm):
    """A manual invoice's line, and the visit of the invoice's day it charges (rule 2): tied to
    the visit, its check-in keeps this charge instead of charging the visit a second time. For
    a new invoice (today) and for a line added to an invoice (its date)."""

    visit = forms.ModelChoiceField(
        queryset=Appointment.objects.none(), required=False, label="For today's visit",
        empty_label="— not for a visit —",
        help_text="Charging a visit here uses its session now; checking it in later does not charge it again.",
    )

    def __init__(self, *args, visits=None, visit_label: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        model_field(self, "visit").queryset = visits if visits is not None else Appointment.objects.none()
        if visit_label is not None:
            self.fields["visit"].label = visit_label
        # Rendered while the view has the clinic's time zone active.
        model_field(self, "visit").label_from_instance = (  # type: ignore[method-assign]
            lambda obj: f"{timezone.localtime(obj.starts_at):%H:%M} {obj.service.name} ({obj.get_status_display()})"
        )


class PaymentForm(forms.Form):
    amount = forms.DecimalField(min_value=Decimal("0.01"), max_digits=10, decimal_places=2)
    method = forms.ChoiceField(choices=PAYMENT_METHODS)


class RefundForm(forms.Form):
    amount = forms.DecimalField(min_value=Decimal("0.01"), max_digits=10, decimal_places=2,
                                help_text="The amount given back, as a positive number.")
    method = forms.ChoiceField(choices=PAYMENT_METHODS)
    reason = forms.CharField(max_length=1000, widget=forms.Textarea(attrs={"rows": 2}))


class ServiceForm(forms.Form):
    name = forms.CharField(max_length=200)
    duration_minutes = forms.IntegerField(label="Length (minutes)", min_value=1, max_value=1440)
    price = forms.DecimalField(min_value=Decimal("0"), max_digits=10, decimal_places=2)
    active = forms.BooleanField(required=False, initial=True, label="Offered (bookable)")


class PackageTemplateForm(forms.Form):
    name = forms.CharField(max_length=200)
    price = forms.DecimalField(min_value=Decimal("0"), max_digits=10, decimal_places=2)
    sessions = forms.IntegerField(min_value=1, max_value=1000)
    services = IdsChoiceField(queryset=Service.objects.none(), label="Eligible services",
                                              widget=forms.CheckboxSelectMultiple)
    valid_days = forms.IntegerField(label="Valid for (days after activation)", required=False, min_value=1,
                                    max_value=3660, help_text="Leave empty for no expiry.")
    active = forms.BooleanField(required=False, initial=True, label="On sale")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model_field(self, "services").queryset = Service.objects.order_by("name")


class TwoFactorCodeForm(forms.Form):
    code = forms.CharField(
        label="Code from your authenticator app", max_length=12, strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                      "autofocus": True, "pattern": "[0-9 ]*"}),
    )
