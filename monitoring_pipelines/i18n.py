"""Message catalogs in five languages, shared by the notifications and the reports.

Each user of it keeps its own ``locales/<locale>.yaml`` folder (English is the reference catalog)
and subclasses :class:`Translator` with that ``folder``. A key missing from a catalog falls back to
English; the test suites fail on any catalog without exactly the English keys and placeholders.
"""

import functools
import string
from pathlib import Path
from typing import ClassVar

import yaml

LOCALES = ("en", "fr", "de", "es", "it")
DEFAULT_LOCALE = "en"


class MissingTranslation(KeyError):
    """A message key that not even the English catalog has: a bug in a template or its caller."""


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
def load_catalog(folder: Path, locale: str) -> dict[str, str]:
    """The flat ``{"severity.critical": "Critical", ...}`` catalog of one locale in ``folder``."""
    if locale not in LOCALES:
        raise ValueError(f"unsupported locale {locale!r} (expected one of {', '.join(LOCALES)})")
    with open(Path(folder) / f"{locale}.yaml", encoding="utf-8") as fh:
        return _flatten(yaml.safe_load(fh) or {})


def placeholders(text: str) -> set[str]:
    """The ``{names}`` a catalog message expects."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def normalize_locale(locale: str | None) -> str:
    """``fr-CA`` and ``fr_FR`` become ``fr``; anything unsupported becomes English."""
    if not locale:
        return DEFAULT_LOCALE
    base = locale.replace("_", "-").split("-")[0].lower()
    return base if base in LOCALES else DEFAULT_LOCALE


class Translator:
    """``t("severity.high")`` or ``t("intro.trigger", kind=..., ...)`` in one locale, from the
    catalogs in the subclass's ``folder``."""

    folder: ClassVar[Path]

    def __init__(self, locale: str, *, strict: bool = False):
        self.locale = normalize_locale(locale)
        self.strict = strict
        self._messages = load_catalog(self.folder, self.locale)
        self._fallback = load_catalog(self.folder, DEFAULT_LOCALE)

    def __call__(self, key: str, **values: object) -> str:
        text = self._messages.get(key)
        if text is None:
            if self.strict or key not in self._fallback:
                raise MissingTranslation(f"no {self.locale!r} translation for {key!r}")
            text = self._fallback[key]
        return text.format(**values) if values else text
