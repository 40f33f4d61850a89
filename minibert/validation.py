"""One validation layer for every config dataclass: each field declares its type and range ONCE.

    lr: float = field(default=1e-3, metadata=rule(float, gt=0, lt=1, help="peak learning rate"))

`check_fields(config)` (called by each config's __post_init__) then enforces every rule, so the Python
constructor, JSON files, `--set` and CLI flags all pass through the same check: one rule cannot be checked in one
path and missed in another. The traps it closes:

  * NaN passes every comparison check (`nan < 0` and `nan > 1` are both False), so a float must be finite first;
  * JSON types are taken as they are, never coerced: "0.001" is not a number and "false" is not a boolean
    (`bool("false")` is True!). The one widening allowed is int -> float (`"lr": 1` means 1.0);
  * bool is a subclass of int in Python, so `True` must be refused where an integer is expected.

Each message names the field, the value and the allowed range, e.g. `--lr=nan: must be a finite number in (0, 1)`.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable


class ConfigError(ValueError):
    """A config value broke its field's rule. A ValueError, so callers that catch bad input see it."""


@dataclass(frozen=True)
class Rule:
    """What one field accepts. `kind` is int, float, str, bool or dict; the bounds apply to numbers."""
    kind: type
    optional: bool = False          # None allowed (means "use the default behaviour")
    gt: float | None = None         # value > gt
    ge: float | None = None         # value >= ge
    lt: float | None = None
    le: float | None = None
    choices: tuple | None = None    # for str fields: the allowed values
    pattern: str | None = None      # for str fields: a regular expression the whole value must match
    pattern_help: str = ""          # that pattern in words, e.g. "auto, cpu, cuda or cuda:N"

    def describe(self) -> str:
        """The allowed values in words, for error messages and docs."""
        if self.choices is not None:
            text = f"one of {', '.join(map(str, self.choices))}"
        elif self.pattern is not None:
            text = self.pattern_help or f"a string matching {self.pattern}"
        elif self.kind in (int, float):
            noun = "an integer" if self.kind is int else "a finite number"
            bounded_above = self.le is not None or self.lt is not None
            if self.kind is int and not bounded_above and self.ge in (0, 1) and self.gt is None:
                text = "a positive integer" if self.ge == 1 else "an integer >= 0"
            elif not bounded_above and (self.gt is not None or self.ge is not None):
                text = f"{noun} > {self.gt}" if self.gt is not None else f"{noun} >= {self.ge}"
            elif bounded_above:
                low = f"[{self.ge}" if self.ge is not None else f"({self.gt}" if self.gt is not None else "(-inf"
                high = f"{self.le}]" if self.le is not None else f"{self.lt})"
                text = f"{noun} in {low}, {high}"
            else:
                text = noun
        else:
            text = {bool: "true or false", str: "a string", dict: "a JSON object"}.get(self.kind, self.kind.__name__)
        return text + (" (or null)" if self.optional else "")

    def check(self, value):
        """Returns the value (an int widened to float for float fields); raises ConfigError's message as ValueError."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"must be {self.describe()}")
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # the one widening JSON needs: "lr": 1
        wrong_type = not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool))
        if wrong_type:
            raise ValueError(f"is a {type(value).__name__}, must be {self.describe()}")
        if self.kind is float and not math.isfinite(value):
            raise ValueError(f"must be {self.describe()}")  # NaN slips through every comparison below
        if self.kind in (int, float):
            too_low = (self.gt is not None and not value > self.gt) or (self.ge is not None and not value >= self.ge)
            too_high = (self.lt is not None and not value < self.lt) or (self.le is not None and not value <= self.le)
            if too_low or too_high:
                raise ValueError(f"must be {self.describe()}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be {self.describe()}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ValueError(f"must be {self.describe()}")
        return value


def rule(kind: type, help: str = "", *, optional: bool = False, gt=None, ge=None, lt=None, le=None,
         choices: tuple | None = None, pattern: str | None = None, pattern_help: str = "", **extra) -> dict:
    """Dataclass field metadata holding a Rule (and the CLI help text). `extra` keeps other metadata keys."""
    return {"rule": Rule(kind, optional, gt, ge, lt, le, choices, pattern, pattern_help), "help": help, **extra}


# torch device strings the CLIs accept; anything else would fail deep inside torch with a traceback.
DEVICE = dict(pattern=r"auto|cpu|mps|cuda(:\d+)?", pattern_help="one of auto, cpu, mps, cuda, cuda:N")


def check_fields(config, label: Callable[[str], str]) -> None:
    """Checks every field of a dataclass instance against its declared Rule, widening int -> float in place.

    Args:
        config: a dataclass instance whose fields carry `rule(...)` metadata (fields without one are skipped).
        label: how a field is named to the user, e.g. `lambda name: "--" + name.replace("_", "-")`.
    Raises:
        ConfigError: one line, `<label>=<value>: <what is wrong>`.
    """
    for f in fields(config):
        field_rule = f.metadata.get("rule")
        if field_rule is None:
            continue
        value = getattr(config, f.name)
        try:
            checked = field_rule.check(value)
        except ValueError as error:
            raise ConfigError(f"{label(f.name)}={value!r}: {error}") from None
        if checked is not value:
            object.__setattr__(config, f.name, checked)


def parse_text(field_rule: Rule, text: str):
    """A command-line string cast to the field's kind ('none' -> None for optional fields). Raises ValueError."""
    if field_rule.optional and text.lower() in ("none", "null"):
        return None
    if field_rule.kind is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"{text!r} is not a boolean; use true or false")
    try:
        return field_rule.kind(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid {field_rule.kind.__name__}: must be {field_rule.describe()}") \
            from None


def unknown_keys(cls, values: dict, source: str) -> None:
    """Refuses keys that are not fields of `cls`: a typo in a JSON file must not be silently ignored."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {unknown}; valid fields are {sorted(known)}")


def read_json_object(path: str | os.PathLike, source: str, fix: str) -> dict:
    """Reads a config file that must hold one JSON object; every failure is one line naming `source` and the fix.

    Args:
        path: the file. source: how the user named it, e.g. "--config run.json". fix: what to pass instead.
    Returns:
        the object as a dict, values untouched (check_fields judges them against the rules).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: {'a folder, not a file' if path.is_dir() else 'file not found'}; {fix}")
    try:
        values = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: skip the BOM that Windows editors add
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{source}: not valid JSON ({error}); {fix}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a JSON object of fields, got {type(values).__name__}")
    return values
