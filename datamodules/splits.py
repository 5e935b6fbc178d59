"""Which examples go to train, val and test, shared by every kind of data that splits its examples itself.

An example's split is drawn by a seeded hash of its group's name (a movie, a speaker, a record's id; a row's
number where there are no groups): no group's examples leak across splits, the in-memory path and the
prepared shards of the same file hold the same examples, and splitting needs no pass over the whole file.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from validation import ConfigError

SPLITS = ("train", "val", "test")


def split_of(group: str, val_fraction: float, test_fraction: float, seed: int) -> str:
    """The split of every example of `group` (e.g. a movie; a row's number where there are no groups), by a
    seeded hash of its name: no group's examples leak across splits, and no split needs the whole file."""
    u = (zlib.crc32(f"{seed}:{group}".encode()) & 0xFFFFFFFF) / 2**32  # uniform in [0, 1)
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def group_split(groups: Iterable[str], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Each group's split (`split_of`)."""
    return [split_of(group, val_fraction, test_fraction, seed) for group in groups]


def check_splits(source: str, counts: dict[str, int], labels: dict[str, set[str]], what: str = "texts") -> list[str]:
    """The classes (the training split's labels, sorted), once every split has examples, training has two
    labels or more, and no label occurs only outside training. `what` the examples are, for the message."""
    for name in SPLITS:
        if not counts[name]:
            raise ConfigError(f"the {name} split of {source} is empty; use more data or larger fractions")
    classes = sorted(labels["train"])
    if len(classes) < 2:
        raise ConfigError(f"the training {what} of {source} have {len(classes)} label(s); need 2 or more")
    unknown = sorted((labels["val"] | labels["test"]) - set(classes))
    if unknown:
        raise ConfigError(f"labels {', '.join(unknown)} occur only outside the training split; merge or drop them")
    return classes
