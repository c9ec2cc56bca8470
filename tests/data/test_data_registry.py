"""The registry API: names, options and their parsing, and error messages."""

from __future__ import annotations

import inspect

import pytest

from excite.data import dataset_options, list_datasets, load_splits, parse_data_options
from excite.data.registry import get_spec

BUILT_IN = {"fashion-mnist", "moving-shapes", "shapes3d"}


def test_list_datasets_sorted_and_complete():
    names = list_datasets()
    assert names == sorted(names)
    assert BUILT_IN <= set(names)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_splits("mnist-moving")
    for name in list_datasets():
        assert name in str(info.value)
    with pytest.raises(ValueError, match="moving-shapes"):
        dataset_options("nope")


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match=r"\['colour'\].*frames"):
        load_splits("moving-shapes", colour=3)


@pytest.mark.parametrize("name", sorted(list_datasets()))
def test_option_table_matches_builder_signature(name):
    """Documented defaults are the ones the builder declares (keyword-only, no default
    in the signature, or the same default)."""
    spec = get_spec(name)
    params = inspect.signature(spec.build).parameters
    for key, option in spec.options.items():
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY
        # the default passes its own validation unchanged
        assert option.kind(key, option.default) == option.default
        assert option.help
    assert dataset_options(name) == {k: o.default for k, o in spec.options.items()}


def test_parse_data_options_types():
    parsed = parse_data_options(
        "moving-shapes",
        ["frames=8", "size=32x48", "classes=left,right", "noise=0.05", "val-size=none", "cache=yes", "speed=1:2"],
    )
    assert parsed == {
        "frames": 8,
        "size": (32, 48),
        "classes": ("left", "right"),
        "noise": 0.05,
        "val_size": None,
        "cache": True,
        "speed": (1.0, 2.0),
    }
    assert parse_data_options("moving-shapes", ["classes=8"])["classes"][-1] == "up-right"
    assert parse_data_options("shapes3d", ["size=20"]) == {"size": (20, 20, 20)}


@pytest.mark.parametrize(
    "pairs, error, match",
    [
        (["frames"], ValueError, "key=value"),
        (["frames=eight"], ValueError, "'frames' must be an integer"),
        (["frames=1"], ValueError, r"'frames' must be in int \[2"),
        (["size=1x2x3"], ValueError, "needs 2 sizes"),
        (["classes=left,sideways"], ValueError, r"unknown names \['sideways'\]"),
        (["classes=1"], ValueError, "between 2 and 8"),
        (["cache=maybe"], ValueError, "true or false"),
        (["speed=3,1"], ValueError, "low <= high"),
        (["noise=-1"], ValueError, "'noise' must be in"),
        (["warp=9"], TypeError, "warp"),
    ],
)
def test_parse_data_options_errors(pairs, error, match):
    with pytest.raises(error, match=match):
        parse_data_options("moving-shapes", pairs)


def test_string_values_are_parsed_by_load_splits_too():
    splits = load_splits("moving-shapes", frames="4", size="16", train_size="5", val_size="2", radius="2,3")
    assert splits.info.sample_shape == (1, 4, 16, 16) and len(splits.train) == 5


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(val_fraction=0.0), ValueError, "val_fraction"),
        (dict(val_fraction=1.5), ValueError, "val_fraction"),
        (dict(val_fraction="a"), TypeError, "val_fraction"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(strict="yes"), TypeError, "strict"),
        (dict(frames=2.5), TypeError, "'frames' must be an int"),
        (dict(classes=["up", "up"]), ValueError, "repeats"),
        (dict(classes=3, num_classes=2), ValueError, "not both"),
        (dict(radius=(20, 40)), ValueError, "too large"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        load_splits("moving-shapes", **kwargs)


def test_num_classes_alias():
    splits = load_splits("moving-shapes", num_classes=8, train_size=8, frames=2, size=16, radius=2)
    assert splits.info.num_classes == 8
    vols = load_splits("shapes3d", num_classes=7, train_size=7, size=8)
    assert vols.info.class_names[-1] == "capsule"


def test_datasets_pickle_for_spawned_dataloader_workers(tmp_path):
    """DataLoader workers started with spawn/forkserver receive the dataset pickled."""
    import pickle

    import numpy as np
    import torch

    np.save(tmp_path / "a.npy", np.zeros((3, 3, 3), np.float32))  # not in a class folder: ignored
    for cls in ("p", "q"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            np.save(tmp_path / cls / f"{i}.npy", np.full((3, 3, 3), i + (cls == "q"), np.float32))
    cases = [
        load_splits("moving-shapes", train_size=3, frames=2, size=16, radius=2),
        load_splits("shapes3d", train_size=3, size=8),
        load_splits("volume-folder", data_dir=tmp_path, val_fraction=0.5),
        load_splits("volume-folder", data_dir=tmp_path, val_fraction=0.5, cache=False, normalize="sample"),
    ]
    for splits in cases:
        copy = pickle.loads(pickle.dumps(splits.train))
        assert torch.equal(copy[1][0], splits.train[1][0]) and copy[1][1] == splits.train[1][1]
