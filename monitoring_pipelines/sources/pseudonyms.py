"""Pseudonymising personal tag values at ingest, before anything is written.

Tags named in ``MONITORING_PERSONAL_TAGS`` (``user_id,email``) get their values replaced by a
keyed hash, ``ps:`` and the first 32 hex digits of HMAC-SHA256 under ``MONITORING_PSEUDONYM_KEY``
(read from the environment only, never logged, never stored). The same value under the same key
always gives the same pseudonym, so series can still be grouped by user; without the key nobody
can get the value back or test a guess. Personal tags configured without a key: ingest refuses
with one line (:class:`PseudonymKeyMissing`) rather than store raw values.

Applied to the records a source read (landing) and to the rows it refused (quarantine: their
``raw`` text and any reason quoting a personal tag).
"""

import hashlib
import hmac
import json
import os
from collections.abc import Mapping

import pandas as pd

from monitoring_pipelines.sources.files.text import InputFileError

PERSONAL_TAGS_ENV = "MONITORING_PERSONAL_TAGS"
KEY_ENV = "MONITORING_PSEUDONYM_KEY"
PREFIX = "ps:"


class PseudonymKeyMissing(InputFileError):
    """Personal tags are configured but the key is not in the environment. An input error (one
    line, a failed run, exit 2 on the command line) so every caller already reports it; raised
    before a file is read, so no ingest is recorded as failed and the file is taken once the key
    is set."""


class Pseudonymiser:
    def __init__(self, personal: frozenset[str], key: bytes):
        self.personal = personal
        self._key = key
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:  # the key never shows, not even in a traceback's locals
        return f"Pseudonymiser(personal={sorted(self.personal)})"

    def pseudonym(self, value: object) -> str:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if text.startswith(PREFIX):
            return text  # already pseudonymised (a re-read landing row)
        digest = hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest[:32]

    def _mapping(self, data: dict) -> dict:
        return {
            k: (self.pseudonym(v) if k in self.personal and v is not None else self._value(v))
            for k, v in data.items()
        }

    def _value(self, value):
        if isinstance(value, dict):
            return self._mapping(value)
        if isinstance(value, str) and value.startswith("{"):
            try:
                inner = json.loads(value)
            except ValueError:
                return value
            if isinstance(inner, dict):
                return json.dumps(self._mapping(inner), sort_keys=True, separators=(",", ":"))
        return value

    def tags_text(self, text: str) -> str:
        """A record's tags (canonical JSON or "") with personal values replaced."""
        if not text:
            return text
        if text not in self._cache:
            self._cache[text] = self._value(text)
        return self._cache[text]

    def records(self, frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty or "tags" not in frame.columns:
            return frame
        out = frame.copy()
        out["tags"] = out["tags"].map(self.tags_text)
        return out

    def rejected(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Refused rows: personal values in ``raw`` replaced; a reason that quotes a personal
        tag (a ``tags`` value that is not an object) loses the quote."""
        if frame.empty:
            return frame
        out = frame.copy()
        if "raw" in out.columns:
            out["raw"] = out["raw"].map(self._raw)
        if "reason" in out.columns:
            out["reason"] = out["reason"].map(self._reason)
        return out

    def _raw(self, text):
        if not isinstance(text, str):
            return text
        try:
            data = json.loads(text)
        except ValueError:
            return self._reason(text)
        if not isinstance(data, dict):
            return text
        return json.dumps(self._mapping(data), sort_keys=True, default=str)

    def _reason(self, text):
        if isinstance(text, str) and any(name in text for name in self.personal):
            field = text.split(":", 1)[0]
            return f"{field}: (withheld: it holds personal tags)"
        return text


def from_environment(environ: Mapping[str, str] | None = None) -> Pseudonymiser | None:
    """The pseudonymiser the environment asks for; None when no tag is personal."""
    env = os.environ if environ is None else environ
    personal = frozenset(
        t.strip() for t in (env.get(PERSONAL_TAGS_ENV) or "").split(",") if t.strip()
    )
    if not personal:
        return None
    key = env.get(KEY_ENV) or ""
    if not key:
        raise PseudonymKeyMissing(
            f"ingest refused: {PERSONAL_TAGS_ENV} names personal tags "
            f"({', '.join(sorted(personal))}) but {KEY_ENV} is not set"
        )
    return Pseudonymiser(personal, key.encode("utf-8"))


def apply(pseudonymiser: Pseudonymiser | None, records: pd.DataFrame) -> pd.DataFrame:
    return records if pseudonymiser is None else pseudonymiser.records(records)


def apply_rejected(pseudonymiser: Pseudonymiser | None, rejected: pd.DataFrame) -> pd.DataFrame:
    return rejected if pseudonymiser is None else pseudonymiser.rejected(rejected)
