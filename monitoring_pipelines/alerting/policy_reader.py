"""Reading the policy file: its YAML dialect, durations, and typed values with one-line errors.

Every part of the policy (settings, routes, silences, inhibition, rate limits, receivers) is read
through a :class:`PolicyReader`, so every mistake is reported the same way: one line naming the
file, the key path and what is wrong (:class:`PolicyError`).
"""

import re
from collections.abc import Iterable
from datetime import timedelta

import yaml


class PolicyError(ValueError):
    """A policy mistake, as one line: ``file: key.path: what is wrong``."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path, self.message = source, path, message
        super().__init__(f"{source}: {path}: {message}" if path else f"{source}: {message}")


class _Loader(yaml.SafeLoader):
    """YAML without the 1.1 surprises: ``02:00`` stays a string (not 120 minutes in base 60) and
    timestamps stay strings, so times and dates are parsed (and reported) by the policy modules."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag
        not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)


def load_yaml(text: str):
    """The YAML document in ``text`` (a SafeLoader subclass; raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_Loader)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: object) -> timedelta:
    """``10m``, ``4h``, ``1d``, ``1h30m`` -> timedelta; ValueError otherwise."""
    if isinstance(text, str):
        compact = text.strip().replace(" ", "")
        parts = _DURATION.findall(compact)
        if compact and "".join(a + b for a, b in parts) == compact:
            return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
    raise ValueError(f"bad duration {text!r} (expected a number and a unit: 90s, 10m, 4h, 1d, 1w)")


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def join(path: str, key: str) -> str:
    """``path.key`` (``key`` alone at the top of the file)."""
    return f"{path}.{key}" if path else key


def _kind(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), repr(value))


class PolicyReader:
    """Reads typed values out of one policy file, naming the file and key path in every error."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str) -> PolicyError:
        return PolicyError(self.source, path, message)

    def mapping(self, value, path: str, allowed: Iterable[str] | None = None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {_kind(value)}")
        if allowed is not None:
            allowed = list(allowed)
            for key in value:
                if key not in allowed:
                    raise self.fail(
                        join(path, str(key)),
                        f"unknown key {key!r} (expected one of {', '.join(allowed)})",
                    )
        return value

    def sequence(self, value, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {_kind(value)}")
        return value

    def text(self, value, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def duration(self, value, path: str, *, allow_zero: bool = False) -> timedelta:
        try:
            out = parse_duration(value)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None
        if out < timedelta(0) or (out == timedelta(0) and not allow_zero):
            raise self.fail(path, f"must be {'>= 0' if allow_zero else 'positive'}, got {value!r}")
        return out

    def number(self, value, path: str, *, low: float, high: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number, got {value!r}")
        if value <= low or (high is not None and value > high):
            bound = f"> {low}" + ("" if high is None else f" and <= {high}")
            raise self.fail(path, f"must be {bound}, got {value!r}")
        return float(value)

    def known_receiver(self, name: str, path: str, receivers) -> None:
        """Fail unless ``name`` is one of the policy's receivers."""
        if name not in receivers:
            known = ", ".join(sorted(receivers)) or "none defined"
            raise self.fail(path, f"unknown receiver {name!r} (receivers: {known})")
