"""Recipe schema: strict keys, types, cross-field rules, --set overrides, shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from aesr_sci.errors import RecipeError
from aesr_sci.recipe import load_recipe, parse_override

ROOT = Path(__file__).resolve().parents[1]

BASE = {"data": {"scale": 2, "patch_size": 32, "degradation": {"method": "kspace"}}}
RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def _error(overrides: list[str], base: dict | None = None) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(base or BASE, overrides=overrides)
    return str(info.value)


def test_defaults_and_overrides_parse_as_yaml() -> None:
    r = load_recipe(
        BASE, overrides=["train.max_minutes=3", "data.paths=[a.nii.gz, b.nii.gz]", "train.seed=7"]
    )
    assert r.train.max_minutes == 3
    assert r.data.paths == ["a.nii.gz", "b.nii.gz"]
    assert r.train.seed == 7
    assert r.data.scale_tuple() == (2, 2, 2)
    assert r.data.patch_tuple() == (32, 32, 32)


def test_unknown_key_suggests_the_right_one() -> None:
    msg = _error(["train.batchsize=4"])
    assert msg == "recipe: train.batchsize: unknown key; did you mean 'batch_size'?"


def test_wrong_type_and_range_name_the_key_and_value() -> None:
    assert _error(["train.batch_size=-4"]) == "recipe: train.batch_size: must be greater than 0 (got -4)"
    assert "train.max_minutes" in _error(["train.max_minutes=abc"])
    assert "data.degradation.method" in _error(["data.degradation.method=fourier"])


def test_patch_not_divisible_by_scale() -> None:
    msg = _error(["data.patch_size=[32, 31, 30]"])
    assert msg.startswith("recipe: data.patch_size: [32, 31, 30] is not divisible by the scale [2, 2, 2]")


def test_wrong_number_of_axes_reports_each_key() -> None:
    msg = _error(["data.scale=[1, 2]", "data.patch_size=[4, 4]"])
    assert msg.splitlines() == [
        "recipe: data.scale: has 2 axes but spatial_dims is 3 (got [1, 2])",
        "recipe: data.patch_size: has 2 axes but spatial_dims is 3 (got [4, 4])",
    ]


def test_several_problems_one_line_each() -> None:
    msg = _error(["train.batch_size=0", "train.lr=-1", "model.name=residual", "trian.seed=1"])
    lines = msg.splitlines()
    assert len(lines) == 3, msg
    assert any(line.startswith("recipe: trian: unknown key") for line in lines)


def test_slice_degradation_needs_one_scaled_axis() -> None:
    assert "exactly one axis" in _error(
        ["data.degradation.method=slice", "data.scale=[2, 2, 4]", "data.patch_size=[8, 8, 16]"]
    )


def test_bad_override_syntax() -> None:
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        parse_override("train.max_minutes")
    with pytest.raises(RecipeError, match="not valid YAML"):
        parse_override("data.paths=[a, b")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: not valid YAML \(line"):
        load_recipe(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(RecipeError, match="empty"):
        load_recipe(empty)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("data: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(evil)


def test_gpu_section_applies_only_on_cuda() -> None:
    r = load_recipe(BASE, overrides=["gpu.batch_size=16", "gpu.patch_size=64"])
    assert r.for_device("cpu").train.batch_size == 4
    g = r.for_device("cuda")
    assert g.train.batch_size == 16 and g.data.patch_tuple() == (64, 64, 64)


def test_gpu_section_gives_the_sampler_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    r = load_recipe(BASE)
    assert r.for_device("cpu").train.num_workers == 0
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert r.for_device("cuda").train.num_workers == 8  # one per core but one, at most 8
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert r.for_device("cuda").train.num_workers == 1
    explicit = load_recipe(BASE, overrides=["gpu.num_workers=3"])
    assert explicit.for_device("cuda").train.num_workers == 3
    own = load_recipe(BASE, overrides=["train.num_workers=2"])
    assert own.for_device("cuda").train.num_workers == 2


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_validate(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.source == str(path)
    assert recipe.train.max_minutes is not None and recipe.train.max_minutes <= 30
    from aesr_sci.nets import build_model
    from aesr_sci.nets.registry import is_guided

    # the recipe's model section builds (wrong network arguments would fail here)
    build_model(
        recipe.model.name,
        spatial_dims=recipe.data.spatial_dims,
        in_channels=recipe.data.channels or 1,
        scale=list(recipe.data.scale_tuple()),
        **({"guide_channels": 1} if is_guided(recipe.model.name) else {}),
        **recipe.model.kwargs(),
    )
    assert bool(recipe.data.guides) == is_guided(recipe.model.name)  # a guided model names its guides


def test_there_are_six_shipped_recipes() -> None:
    names = {p.stem for p in RECIPES}
    assert {"mri_x2", "mri_slice_x4", "sentinel2_x2", "sentinel2_x4", "landsat_x2", "mri_x2_gan"} <= names


def test_docs_list_every_key() -> None:
    from aesr_sci.recipe import reference_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()
    assert reference_table() in docs, (
        "docs/recipes.md is out of date: paste aesr_sci.recipe.reference_table()"
    )


def test_overriding_paths_alone_drops_the_recipes_validation_files() -> None:
    """The issue's command: own scenes from the command line, the recipe's validation scene dropped."""
    recipe = ROOT / "recipes" / "sentinel2_guided_x2.yaml"
    with pytest.warns(UserWarning, match="validation files are dropped"):
        r = load_recipe(
            recipe, overrides=["data.paths=[a_20m.tif,b_20m.tif]", "data.guides=[a_10m.tif,b_10m.tif]"]
        )
    assert r.data.val_paths == [] and r.data.val_guides == []
    kept = load_recipe(
        recipe,
        overrides=[
            "data.paths=[a.tif,b.tif]",
            "data.guides=[c.tif,d.tif]",
            "data.val_paths=[e.tif]",
            "data.val_guides=[f.tif]",
        ],
    )
    assert kept.data.val_paths[-1].endswith("e.tif") and kept.data.val_guides[-1].endswith("f.tif")
    untouched = load_recipe(recipe, overrides=["train.max_steps=3"])
    assert untouched.data.val_paths and untouched.data.val_guides
