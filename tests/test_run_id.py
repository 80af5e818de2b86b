"""Run identity: stable, sensitive to what changes results, blind to where files go."""

from __future__ import annotations

from datascale.run_id import RUN_ID_LENGTH, run_identity

BASE = {
    "seed": 0,
    "study": {"name": "data_size", "axes": ["subset.unique_tokens"]},
    "subset": {"unique_tokens": 8000, "order_seed": 0},
    "model": {"n_layer": 2, "d_model": 128},
    "trainer": {"enable_progress_bar": True, "precision": "32-true"},
    "paths": {"results_dir": "/a"},
    "logger": {"wandb": {"mode": "offline"}},
}


def with_(base: dict, path: str, value) -> dict:
    import copy

    out = copy.deepcopy(base)
    node = out
    *heads, leaf = path.split(".")
    for head in heads:
        node = node[head]
    node[leaf] = value
    return out


def test_same_config_same_id_regardless_of_key_order():
    reordered = dict(reversed(list(BASE.items())))
    assert run_identity(BASE, "h1") == run_identity(reordered, "h1")
    assert len(run_identity(BASE, "h1")) == RUN_ID_LENGTH


def test_known_value_is_stable_across_versions():
    # Changing the hashing scheme silently would orphan every finished run: bump deliberately.
    assert run_identity(BASE, "h1") == "d6df2c7b511d"


def test_result_changing_fields_change_the_id():
    ref = run_identity(BASE, "h1")
    assert run_identity(with_(BASE, "seed", 1), "h1") != ref
    assert run_identity(with_(BASE, "model.n_layer", 3), "h1") != ref
    assert run_identity(with_(BASE, "trainer.precision", "bf16-mixed"), "h1") != ref
    assert run_identity(BASE, "h2") != ref  # different data manifest


def test_paths_logging_and_display_do_not_change_the_id():
    ref = run_identity(BASE, "h1")
    assert run_identity(with_(BASE, "paths.results_dir", "/elsewhere"), "h1") == ref
    assert run_identity(with_(BASE, "logger.wandb.mode", "disabled"), "h1") == ref
    assert run_identity(with_(BASE, "trainer.enable_progress_bar", False), "h1") == ref


def test_protocol_hash_ignores_the_grid_point_and_sees_the_protocol() -> None:
    """Runs of one study share a protocol hash whatever their axes and seed; a changed schedule (or any key
    that is not an axis) makes another protocol, and ``differing_keys`` names it."""
    from datascale.run_id import differing_keys, protocol_hash, protocol_view

    axes = BASE["study"]["axes"]
    point = with_(with_(BASE, "subset.unique_tokens", 64000), "seed", 3)
    assert protocol_hash(point, axes) == protocol_hash(BASE, axes)
    assert run_identity(point, "s") != run_identity(BASE, "s")
    other = with_(BASE, "model.d_model", 256)
    assert protocol_hash(other, axes) != protocol_hash(BASE, axes)
    assert differing_keys(protocol_view(BASE, axes), protocol_view(other, axes)) == ["model.d_model"]
    moved = with_(BASE, "paths.results_dir", "/b")  # not part of what a run computes
    assert protocol_hash(moved, axes) == protocol_hash(BASE, axes)
