"""Report text in the tenant's language, like the notifications: ``locales/<locale>.yaml`` catalogs
with English as the reference, numbers written the locale's way. A key missing from a catalog
falls back to English; the tests fail on any catalog without exactly the English keys and
placeholders."""

import functools
import math
import string
from datetime import date, datetime
from pathlib import Path

import yaml

LOCALES = ("en", "fr", "de", "es", "it")
DEFAULT_LOCALE = "en"
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


class MissingTranslation(KeyError):
    pass


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


@functools.cache
def catalog(locale: str) -> dict[str, str]:
    if locale not in LOCALES:
        raise ValueError(f"unsupported locale {locale!r} (expected one of {', '.join(LOCALES)})")
    with open(LOCALE_DIR / f"{locale}.yaml", encoding="utf-8") as fh:
        return _flatten(yaml.safe_load(fh) or {})


def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def normalize_locale(locale: str | None) -> str:
    if not locale:
        return DEFAULT_LOCALE
    base = locale.replace("_", "-").split("-")[0].lower()
    return base if base in LOCALES else DEFAULT_LOCALE


class Translator:
    def __init__(self, locale: str, *, strict: bool = False):
        self.locale = normalize_locale(locale)
        self.strict = strict
        self._messages = catalog(self.locale)
        self._fallback = catalog(DEFAULT_LOCALE)

    def __call__(self, key: str, **values: object) -> str:
        text = self._messages.get(key)
        if text is None:
            if self.strict or key not in self._fallback:
                raise MissingTranslation(f"no {self.locale!r} translation for {key!r}")
            text = self._fallback[key]
        return text.format(**values) if values else text

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
