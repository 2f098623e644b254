"""params.yaml loading: typed frozen sections, unknown keys and wrong types named with the file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from agebench.infra.registry import Registry, UnknownNameError
from agebench.params.load import load_params
from agebench.params.reading import ParamsError, read_params, section
from agebench.params.sections import DataConfig
from tests.conftest import REPO


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_repository_params_load_with_protocol_defaults() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.profile == "full"
    assert params.data.sha256 == "2c0655397b498e81b82d685ee74bee8c2e4364a5897caf3afec6ea48929024a7"
    assert dict(params.groups.pair) == {"young": (20, 29), "old": (50, 59)}
    assert list(params.groups.cgan6) == ["0-18", "19-29", "30-39", "40-49", "50-59", "60+"]
    assert list(params.groups.decades) == ["10s", "20s", "30s", "40s", "50s", "60s"]
    assert params.evaluate.resolution == 128 and params.evaluate.id_threshold == 0.6
    assert params.evaluate.bootstrap_resamples == 1000 and params.evaluate.bootstrap_seed == 0
    assert "identity" in params.methods
    # The file's values equal the dataclass defaults (the defaults are the protocol's).
    assert params.data == DataConfig(source=params.data.source)


def test_sections_are_frozen(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, {"data": {"subsample": 0.5}}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.data.subsample = 1.0  # type: ignore[misc]


def test_unknown_key_is_named_with_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"data": {"sorce": "x"}})
    with pytest.raises(ParamsError) as err:
        load_params(path)
    msg = str(err.value)
    assert str(path) in msg and "data.sorce" in msg and "unknown key" in msg and "source" in msg


@pytest.mark.parametrize(
    ("section_data", "needle"),
    [
        ({"data": {"subsample": "half"}}, "data.subsample: expected a number"),
        ({"train": {"seed": 1.5}}, "train.seed: expected an integer"),
        ({"train": {"deterministic": "yes"}}, "train.deterministic: expected true or false"),
        ({"data": {"resolutions": 64}}, "data.resolutions: expected a list"),
        ({"evaluate": {"age_backend": "magic"}}, "evaluate.age_backend: 'magic' is not one of"),
        ({"data": {"subsample": 0.0}}, "subsample must be in (0, 1]"),
    ],
)
def test_wrong_types_are_errors(tmp_path: Path, section_data: dict, needle: str) -> None:
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, section_data))
    assert needle in str(err.value)


def test_smoke_profile_overlay_and_unknown_overlay_key(tmp_path: Path) -> None:
    base = {"profile": "smoke", "data": {"subsample": 1.0}, "smoke": {"data": {"subsample": 0.1}}}
    assert load_params(write(tmp_path, base)).data.subsample == 0.1
    base["profile"] = "full"
    assert load_params(write(tmp_path, base)).data.subsample == 1.0
    bad = {"profile": "smoke", "data": {}, "smoke": {"dta": {"subsample": 0.1}}}
    with pytest.raises(ParamsError, match=r"smoke\.dta"):
        read_params(write(tmp_path, bad))
    with pytest.raises(ParamsError, match="profile"):
        read_params(write(tmp_path, {"profile": "tiny"}))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_method_section_roundtrip(tmp_path: Path) -> None:
    from methods.identity import IdentityConfig

    raw = read_params(write(tmp_path, {"identity": {"resolution": 64}}))
    assert section(raw, "identity", IdentityConfig).resolution == 64
    with pytest.raises(ParamsError, match=r"identity\.size: unknown key"):
        section(read_params(write(tmp_path, {"identity": {"size": 64}})), "identity", IdentityConfig)


class _Base:
    pass


class _A(_Base):
    pass


def test_registry_rejects_duplicates_wrong_base_and_lists_valid_names() -> None:
    reg: Registry[type] = Registry("widget", {"a": "tests.test_config:_A"}, base="tests.test_config:_Base")
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", "tests.test_config:_A")
    with pytest.raises(ValueError, match="module:attribute"):
        reg.add("b", "no_colon")
    reg.add("c", "builtins:int")
    with pytest.raises(ValueError, match="must subclass _Base"):
        reg.get("c")
    with pytest.raises(UnknownNameError) as err:
        reg.get("zzz")
    assert "unknown widget 'zzz'" in str(err.value) and "valid widgets: a, c" in str(err.value)
    assert reg.get("a") is _A and reg.names() == ["a", "c"]


def test_parsing_params_imports_no_method() -> None:
    """The lazy registry: validating params (method names included) imports no GAN module."""
    import subprocess
    import sys

    code = (
        "import sys; from agebench.params.load import load_params; load_params('params.yaml'); "
        "print(sorted(m for m in sys.modules if m.startswith('methods')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_method_registry_knows_identity() -> None:
    from agebench.infra.registry import METHODS

    assert "identity" in METHODS.names()
    with pytest.raises(UnknownNameError, match="identity"):
        METHODS.get("no-such-method")


def test_unknown_top_level_key_and_unknown_method_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, {"evaluat": {"resolution": 128}})
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(path) in str(err.value) and "evaluat: unknown top-level key" in str(err.value)
    with pytest.raises(UnknownNameError) as err2:
        load_params(write(tmp_path, {"methods": ["identity", "cyclegan_kears"]}))
    assert "cyclegan_kears" in str(err2.value) and "cyclegan_keras" in str(err2.value)
    # A registered method's section is accepted even when the method is not listed.
    assert load_params(write(tmp_path, {"methods": ["identity"], "age_cgan": {"latent_steps": 3}})).methods == (
        "identity",
    )


# ----------------------------------------------------------------------------------------------
# Ranges: every bad value is one ParamsError naming the file and the key


def _repo_params_with(tmp_path: Path, section_name: str | None, key: str, value: object, profile: str = "full") -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["profile"] = profile
    if section_name is None:
        data[key] = value
    else:
        data[section_name][key] = value
    return write(tmp_path, data)


@pytest.mark.parametrize(
    ("section_name", "key", "value", "message"),
    [
        ("cyclegan_agevec", "batch_size", -1, "cyclegan_agevec.batch_size: must be >= 1, got -1"),
        ("generate", "batch_size", -4, "generate.batch_size: must be >= 1, got -4"),
        ("evaluate", "batch_size", 0, "evaluate.batch_size: must be >= 1"),
        ("cyclegan_keras", "lr", 0, "cyclegan_keras.lr: must be > 0"),
        ("cyclegan_perceptual", "lr", 0.0, "cyclegan_perceptual.lr: must be > 0"),
        ("cyclegan_agevec", "lr", -0.1, "cyclegan_agevec.lr: must be > 0"),
        ("age_cgan", "encoder_lr", 0, "age_cgan.encoder_lr: must be > 0"),
        ("age_cgan", "encoder_steps", 0, "age_cgan.encoder_steps: must be >= 1"),
        ("train", "log_every", 0, "train.log_every: must be >= 1"),
        ("train", "checkpoint_every", 0, "train.checkpoint_every: must be >= 1"),
        ("train", "sample_every", -1, "train.sample_every: must be >= 0"),
        ("cyclegan_keras", "batch_per_size", [32, 0, 2], "cyclegan_keras.batch_per_size: must be >= 1"),
        ("cyclegan_keras", "max_steps", -5, "cyclegan_keras.max_steps: must be >= 0"),
        ("data", "max_member_bytes", 0, "data.max_member_bytes: must be >= 1"),
        (None, "methods", "identity", "methods: expected a list of method names, got str 'identity'"),
        (None, "methods", [], "methods: the list is empty"),
        (None, "methods", [3], "methods[0]: expected a method name"),
    ],
)
def test_out_of_range_params_are_one_line_errors(tmp_path: Path, section_name, key, value, message) -> None:
    path = _repo_params_with(tmp_path, section_name, key, value)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_ranges_apply_through_the_profile_overlay(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["profile"] = "smoke"
    data["smoke"]["age_cgan"]["batch_size"] = 0
    with pytest.raises(ParamsError, match=r"age_cgan\.batch_size: must be >= 1, got 0"):
        load_params(write(tmp_path, data))


def test_method_section_ranges_checked_by_its_config_class_too() -> None:
    """A method's own section, built through `section` (as the train stage does), gets the same rules."""
    from agebench.infra.registry import METHODS

    cls = METHODS.get("cyclegan_agevec").config_cls
    with pytest.raises(ParamsError, match=r"params\.yaml: cyclegan_agevec\.batch_size: must be >= 1"):
        section({"cyclegan_agevec": {"batch_size": 0}}, "cyclegan_agevec", cls)
    assert section({"cyclegan_agevec": {"max_steps": 0}}, "cyclegan_agevec", cls).max_steps == 0


def test_repository_params_pass_the_range_rules(tmp_path: Path) -> None:
    for profile in ("full", "smoke"):
        data = yaml.safe_load((REPO / "params.yaml").read_text())
        data["profile"] = profile
        assert load_params(write(tmp_path, data)).profile == profile


def test_second_opinion_metrics_must_match_the_backend(tmp_path: Path) -> None:
    """`id_backend: facenet` with the default metrics (identity_dlib, joint_dlib) is a params error at load,
    not a KeyError after every network has loaded."""
    path = _repo_params_with(tmp_path, "evaluate", "id_backend", "facenet")
    with pytest.raises(ParamsError, match=r"'identity_dlib' needs `evaluate\.id_backend: dlib`"):
        load_params(path)
    raw = yaml.safe_load(path.read_text())
    raw["evaluate"]["metrics"] = ["face", "age", "identity", "joint", "identity_facenet", "joint_facenet"]
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path).evaluate.id_backend == "facenet"


# ----------------------------------------------------------------------------------------------
# The pre-flight's params check: every section of every profile, method sections by their own class


def _bad_method_section(profile: str) -> dict:
    """The repository's params with a typo, a string int and a string float in cyclegan_agevec's section,
    written where `profile` reads them (the base section for full, the overlay for smoke and cpu)."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    bad = {"batch_size": "8", "lr": "0.0002"}
    if profile == "full":
        data["cyclegan_agevec"].update(bad, bach_size=1)
    else:
        data[profile]["cyclegan_agevec"].update(bad, bach_size=1)
    return data


@pytest.mark.parametrize("profile", ["full", "smoke", "cpu"])
def test_params_problems_lists_every_bad_key_of_a_method_section_in_each_profile(tmp_path: Path, profile: str) -> None:
    from agebench.params.load import params_problems

    path = write(tmp_path, _bad_method_section(profile))
    lines = params_problems(path)
    where = f"{path}: " + ("" if profile == "full" else f"{profile}.") + "cyclegan_agevec"
    assert any(line.startswith(f"{where}.bach_size: ") and "did you mean batch_size?" in line for line in lines), lines
    assert f"{where}.batch_size: expected an integer, got str '8'" in lines, lines
    assert f"{where}.lr: expected a number, got str '0.0002'" in lines, lines
    assert len(lines) == 3 and all("\n" not in line for line in lines), lines
    # The active profile does not matter: the file is checked as every profile would read it.
    data = _bad_method_section(profile)
    data["profile"] = "smoke" if profile == "full" else "full"
    assert len(params_problems(write(tmp_path, data))) == 3


def test_params_problems_is_empty_for_the_repository_params_and_covers_shared_sections(tmp_path: Path) -> None:
    from agebench.params.load import params_problems

    assert params_problems(REPO / "params.yaml") == []
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["train"]["sed"] = 1
    data["cpu"]["data"]["subsample"] = 0.0
    data["smoke"]["age_cgan"]["latent_step"] = 2
    lines = params_problems(write(tmp_path, data))
    assert any("train.sed: unknown key (did you mean seed?)" in line for line in lines), lines
    assert any("cpu.data: subsample must be in (0, 1]" in line for line in lines), lines
    assert any("smoke.age_cgan.latent_step" in line and "latent_steps" in line for line in lines), lines
    assert len(lines) == 3, lines


def test_unknown_key_suggests_the_closest_valid_key(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"data\.sorce: unknown key \(did you mean source\?\)"):
        load_params(write(tmp_path, {"data": {"sorce": "x"}}))
