"""Each datamodule's built-in sources are one table, and the names the command accepts are that table's.

jsonargparse takes its choices (and its messages for a wrong name) from a `Literal`, so a datamodule whose
option names a source keeps one beside its table: here the two are checked to list the same names, in the
same order, so that neither changes without the other."""

from __future__ import annotations

import typing

import pytest

from datamodules import image

# (the Literal of the option, the names it must list: the table's keys, then names that are not built-in)
ACCEPTED_NAMES = [
    pytest.param(image.DatasetName, (*image.BUILTIN_DATASETS, "folder"), id="image"),
]


@pytest.mark.parametrize(("accepted", "names"), ACCEPTED_NAMES)
def test_the_accepted_names_are_the_tables_keys(accepted: object, names: tuple[str, ...]) -> None:
    assert typing.get_args(accepted) == names


def test_a_built_in_image_dataset_has_the_shape_and_classes_its_table_gives() -> None:
    """The facts a model is built with before any image loads agree with the images (the offline one)."""
    digits = image.BUILTIN_DATASETS["digits"]
    source = digits.load(None)
    assert tuple(source.train[0].shape[1:]) == digits.shape
    assert len(source.classes) == digits.num_classes
