"""Amounts as staff read them, in the clinic's currency: one way everywhere (pages, printed
invoices, the investigator's sentences, the command line)."""

from __future__ import annotations

from decimal import Decimal

SYMBOLS = {"USD": "$", "CAD": "CA$", "AUD": "A$", "NZD": "NZ$", "EUR": "€", "GBP": "£", "JPY": "¥",
           "CHF": "CHF ", "INR": "₹"}


def format_money(amount: Decimal | int | None, currency: str) -> str:
    if amount is None:
        return ""
    value = Decimal(amount)
    sign = "−" if value < 0 else ""
    symbol = SYMBOLS.get(currency, f"{currency} ")
    return f"{sign}{symbol}{abs(value):,.2f}"
