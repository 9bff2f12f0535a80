"""Units of measure with pint: whether the words after a number are a unit, and the factor between two.

Only everyday units count (metres, grams, seconds, litres, miles per hour ... with SI prefixes where SI has
them; ROOT_UNITS lists them all): pint also knows "cats" (centi-technical-atmospheres), "bags" and
"points", which in a word problem are things counted. Words that are no such unit ("boxes", "people",
"dollars") are words, and dimensionless units (percent, degrees of angle, dozens) are words too; offset
units (degrees Celsius) are never converted.

Importing this module imports pint and builds its UnitRegistry (about 0.5 s), once per process: the
verifier's forkserver imports it (warm.py), so every worker inherits the registry, and equivalence.py
imports it only when both answers carry words and they differ: numbers without units, or with the same
words on both sides, never pay for pint.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import pint

# pint's names of the units we accept (plural and prefixed forms resolve to these).
ROOT_UNITS = frozenset(
    "meter inch foot yard mile gram pound ounce ton metric_ton second minute hour day week year liter gallon "
    "quart pint cup tablespoon teaspoon fluid_ounce acre hectare kilometer_per_hour mile_per_hour newton "
    "joule watt volt ampere ohm pascal calorie kelvin mole hertz coulomb".split()
)
MAX_WORDS = 4  # "square meters of land": the unit is the longest run of leading words that parses
MAX_CHARS = 40
# Definitions read as fractions, so conversions are exact: a foot is 381/1250 m, not 0.30479999999999996.
REGISTRY = pint.UnitRegistry(non_int_type=Fraction)


@dataclass(frozen=True)
class Unit:
    dimensions: tuple[tuple[str, float], ...]  # (("[length]", 1), ("[time]", -1)) for km/h
    scale: Fraction  # the unit in SI base units, exactly: 5/18 for km/h, 381/1250 for ft


def scale_between(pred_words: str, gold_words: str) -> Fraction | None:
    """How many gold units one pred unit is (1000 for kg against g); 1 when either side has no unit or
    only words; None when both are units of different dimensions (kg against m)."""
    if not pred_words or not gold_words or pred_words == gold_words:
        return Fraction(1)
    pred, gold = lookup(pred_words), lookup(gold_words)
    if pred is None or gold is None:
        return Fraction(1)
    if pred.dimensions != gold.dimensions:
        return None
    return pred.scale / gold.scale


@lru_cache(maxsize=4096)
def lookup(words: str) -> Unit | None:
    """The unit that `words` starts with ("km per hour", "cm^2 of paper"), or None when it is no unit."""
    candidates = words[:MAX_CHARS].replace("{", "").replace("}", "").replace("\\", "").split()[:MAX_WORDS]
    for count in range(len(candidates), 0, -1):
        unit = _unit(" ".join(candidates[:count]))
        if unit is not None:
            return unit
    return None


def _unit(text: str) -> Unit | None:
    for spelling in dict.fromkeys([text, text.lower() if len(text) > 2 else text]):
        try:
            units = REGISTRY.parse_units(spelling)
            quantity = REGISTRY.Quantity(Fraction(1), units)
            if not all(_root(name) in ROOT_UNITS for name in units._units) or not quantity._ok_for_muldiv():
                continue
            dimensions = tuple(sorted(quantity.dimensionality.items()))
            if dimensions:
                return Unit(dimensions, Fraction(quantity.to_base_units().magnitude))
        except Exception:  # pint raises many kinds (undefined unit, syntax, tokenizer) on words
            continue
    return None


def _root(name: str) -> str:
    """pint's unit name without prefix or plural: "kilometer" -> "meter"."""
    return REGISTRY.parse_unit_name(name)[0][1]

