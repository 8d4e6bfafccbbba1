"""Report text in the tenant's language, like the notifications: ``locales/<locale>.yaml`` catalogs
with English as the reference, numbers written the locale's way. A key missing from a catalog
falls back to English; the tests fail on any catalog without exactly the English keys and
placeholders."""

import math
from datetime import date, datetime
from pathlib import Path

from monitoring_pipelines import i18n

# Re-exported: the report service and the tests read them from here.
from monitoring_pipelines.i18n import LOCALES as LOCALES
from monitoring_pipelines.i18n import MissingTranslation as MissingTranslation
from monitoring_pipelines.i18n import load_catalog
from monitoring_pipelines.i18n import normalize_locale as normalize_locale
from monitoring_pipelines.i18n import placeholders as placeholders

LOCALE_DIR = Path(__file__).parent / "locales"

# (thousands separator, decimal separator, percent sign spacing)
_SEPARATORS = {
    "en": (",", ".", ""),
    "fr": ("\u202f", ",", "\u202f"),
    "de": (".", ",", "\u202f"),
    "es": (".", ",", "\u202f"),
    "it": (".", ",", ""),
}
_MONTHS = {
    "en": "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec",
    "fr": "janv. févr. mars avr. mai juin juil. août sept. oct. nov. déc.",
    "de": "Jan. Feb. März Apr. Mai Juni Juli Aug. Sept. Okt. Nov. Dez.",
    "es": "ene. feb. mar. abr. may. jun. jul. ago. sept. oct. nov. dic.",
    "it": "gen feb mar apr mag giu lug ago set ott nov dic",
}


def catalog(locale: str) -> dict[str, str]:
    """The flat catalog of one locale of the reports."""
    return load_catalog(LOCALE_DIR, locale)


class Translator(i18n.Translator):
    """The reports' messages in one locale, and numbers, percentages and dates written its way."""

    folder = LOCALE_DIR

    def _separate(self, text: str) -> str:
        group, decimal, _ = _SEPARATORS[self.locale]
        return text.replace(",", "\x00").replace(".", decimal).replace("\x00", group)

    def number(self, value, digits: int | None = None) -> str:
        if value is None:
            return "—"
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return "—"
        if digits is not None:
            text = f"{value:,.{digits}f}"
        elif abs(value) >= 100 or value == int(value):
            text = f"{value:,.0f}"
        elif abs(value) >= 1:
            text = f"{value:,.2f}"
        else:
            text = f"{value:.3g}"
        return self._separate(text)

    def percent(self, ratio, digits: int = 1) -> str:
        if ratio is None:
            return "—"
        space = _SEPARATORS[self.locale][2]
        return f"{self.number(100 * float(ratio), digits)}{space}%"

    def signed(self, value, *, percent: bool = False, digits: int | None = None) -> str:
        if value is None:
            return ""
        if float(value) == 0:
            return "±0"
        sign = "+" if value > 0 else "−"
        text = (
            self.percent(abs(value), 2 if digits is None else digits)
            if percent
            else self.number(abs(value), digits)
        )
        return f"{sign}{text}"

    def minutes(self, value) -> str:
        if value is None:
            return "—"
        if value >= 120:
            return self("unit.hours", value=self.number(value / 60, 1))
        return self("unit.minutes", value=self.number(value, 0))

    def day(self, value: date | datetime | str) -> str:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        month = _MONTHS[self.locale].split()[value.month - 1]
        return f"{value.day} {month} {value.year}"

    def moment(self, value: str | datetime, timezone: str) -> str:
        """A point in time in the report timezone, minutes."""
        from zoneinfo import ZoneInfo

        ts = datetime.fromisoformat(value) if isinstance(value, str) else value
        local = ts.astimezone(ZoneInfo(timezone))
        return f"{self.day(local)} {local:%H:%M}"
