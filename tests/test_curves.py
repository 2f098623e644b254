"""Learning curves' inputs: the validation split is carved out of train only, is never trained on and never
meets a test face; snapshots are evenly spaced, carry the CPU time, and the last one is the final model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from agebench.data.faces import build_train_data, in_validation, load_index, validation_mask
from agebench.data.prepare import split_of
from agebench.infra.errors import UserError
from agebench.params.load import load_params
from agebench.params.sections import GroupsConfig, TrainConfig
from agebench.pipeline import train as train_stage
from agebench.pipeline.curves import NoSnapshotsError, hash_order, snapshot_files, validation_split

CPU = torch.device("cpu")
TINY = {"ngf": 4, "ndf": 4, "n_blocks": 1, "sizes": [32], "epochs_per_size": [1], "batch_per_size": [2], "max_steps": 7}


@pytest.fixture(scope="module")
def prepared(synthetic_prepared) -> Path:
    return synthetic_prepared(120, (22, 55, 35))


def test_validation_is_a_stable_share_of_train_independent_of_the_test_rule() -> None:
    names = [f"{20 + i % 40}_{i % 2}_0_{i:017d}.jpg.chip.jpg" for i in range(20000)]
    share = np.mean([in_validation(n, 0.1) for n in names])
    assert abs(share - 0.1) < 0.01
    # Independent of the split hash: the test faces' share among validation picks is the test share overall.
    val = [n for n in names if in_validation(n, 0.1)]
    assert abs(np.mean([split_of(n) == "test" for n in val]) - np.mean([split_of(n) == "test" for n in names])) < 0.02
    assert not any(in_validation(n, 0.0) for n in names[:100])


def test_validation_mask_never_takes_a_test_face(prepared: Path) -> None:
    index = load_index(prepared)
    mask = validation_mask(index, 0.5)
    assert mask.any()
    assert (index.loc[mask, "split"] == "train").all()


def test_training_data_leave_the_validation_faces_out(prepared: Path) -> None:
    index = load_index(prepared)
    groups = GroupsConfig()
    full = build_train_data(prepared, "pair", groups, (32,), CPU)
    held = build_train_data(prepared, "pair", groups, (32,), CPU, validation=0.5)
    val = validation_mask(index, 0.5) & (index["pair"] != "").to_numpy()
    n_full, n_held = full.images[32].shape[0], held.images[32].shape[0]
    assert n_full - n_held == int(val.sum()) > 0
    # The faces kept are exactly the non-validation ones, in the same order.
    keep = (index["split"] == "train").to_numpy() & (index["pair"] != "").to_numpy()
    order = np.flatnonzero(~val[keep])
    assert torch.equal(held.images[32], full.images[32][torch.from_numpy(order)])


def test_validation_split_relabels_only_validation_faces_and_drops_the_test_split(prepared: Path) -> None:
    index = load_index(prepared)
    schemes = GroupsConfig().schemes()
    split = validation_split(index, 0.5, 3, schemes)
    out = split.index
    val = validation_mask(index, 0.5)
    test_files = set(index.loc[index["split"] == "test", "file"])
    assert test_files and not test_files & set(out["file"])
    as_test = set(out.loc[out["split"] == "test", "file"])
    assert as_test <= set(index.loc[val, "file"])
    assert not set(out.loc[out["split"] == "train", "file"]) & set(index.loc[val, "file"])
    for scheme, names in schemes.items():
        for g in names:
            assert ((out["split"] == "test") & (out[scheme] == g)).sum() <= 3
    capped = validation_split(index, 0.5, 3, schemes, reference_limit=2, reference_schemes=("pair",)).index
    for g in schemes["pair"]:
        assert ((capped["split"] == "train") & (capped["pair"] == g)).sum() == 2
    assert capped.loc[capped["split"] == "test", "file"].tolist() == out.loc[out["split"] == "test", "file"].tolist()
    with pytest.raises(UserError, match=r"train\.validation is 0"):
        validation_split(index, 0.0, 3, schemes)


def test_hash_order_ignores_the_age_prefix() -> None:
    names = [f"{a}_0_0_{i:05d}.jpg" for a in (20, 21, 22, 23) for i in range(50)]
    first = [names[i] for i in hash_order(names)[:40]]
    # Index order would take 40 faces aged 20; a hash order mixes the ages.
    assert len({n.split("_")[0] for n in first}) == 4


@pytest.mark.parametrize(("total", "n"), [(7, 3), (1631, 6), (5, 6), (10, 1)])
def test_snapshot_steps_are_evenly_spaced_and_end_at_the_last_step(total: int, n: int) -> None:
    steps = sorted(train_stage.snapshot_steps(total, n))
    assert steps[-1] == total and steps[0] >= 1
    assert len(steps) == min(n, total)
    gaps = np.diff([0, *steps])
    assert gaps.max() - gaps.min() <= 1
    assert train_stage.snapshot_steps(total, 0) == frozenset()


def test_train_config_rejects_bad_validation_and_snapshots() -> None:
    with pytest.raises(ValueError, match="validation"):
        TrainConfig(validation=1.0)
    with pytest.raises(ValueError, match="snapshots"):
        TrainConfig(snapshots=-1)


def test_snapshots_carry_cpu_time_and_the_last_is_the_final_model(prepared: Path, tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "methods": ["cyclegan_keras"],
                "train": {
                    "seed": 1,
                    "device": "cpu",
                    "checkpoint_every": 100,
                    "log_every": 1,
                    "sample_every": 0,
                    "threads": 1,
                    "validation": 0.3,
                    "snapshots": 3,
                },
                "cyclegan_keras": TINY,
            }
        )
    )
    out = tmp_path / "model"
    with pytest.raises(NoSnapshotsError, match=r"train\.snapshots"):
        snapshot_files(out)
    summary = train_stage.train("cyclegan_keras", load_params(p), prepared, out, None, progress=False)
    files = snapshot_files(out)
    assert [f.name for f in files] == ["step_0000002.pt", "step_0000005.pt", "step_0000007.pt"]
    snaps = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    cpu = [s["summary"]["cpu_seconds"] for s in snaps]
    assert all(c > 0 for c in cpu) and cpu == sorted(cpu)
    final = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    flat_final = _tensors(final["state"])
    flat_last = _tensors(snaps[-1]["state"])
    assert flat_final.keys() == flat_last.keys() and all(torch.equal(flat_final[k], flat_last[k]) for k in flat_final)
    assert not torch.equal(_tensors(snaps[0]["state"])[next(iter(flat_final))], flat_final[next(iter(flat_final))])
    assert summary["train_faces"] < int(
        ((load_index(prepared)["split"] == "train") & (load_index(prepared)["pair"] != "")).sum()
    )


def _tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
        return out
    return {}


def test_each_method_is_asked_in_its_own_groups(prepared: Path, tmp_path: Path, monkeypatch) -> None:
    """A decade method translates 20s -> 50s for the protocol's young -> old, as `generate` asks it (asking it
    for "young" raised: its groups are decades)."""
    from agebench.data.faces import load_faces
    from agebench.pipeline import curves
    from agebench.pipeline.generate import build_method

    p = tmp_path / "params.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "methods": ["cyclegan_agevec"],
                "train": {"device": "cpu", "validation": 0.5},
                "cyclegan_agevec": {"ngf": 4, "ndf": 4, "n_blocks": 1, "resolution": 32, "epochs": 1},
            }
        )
    )
    params = load_params(p)
    method = build_method("cyclegan_agevec", params, CPU, need_aux=False)
    asked = []

    def translate(x, source, target):
        asked.append((source, target))
        return x

    monkeypatch.setattr(method, "translate", translate)
    monkeypatch.setattr(curves, "score_outputs", lambda *a: {"n": 0})
    split = validation_split(load_index(prepared), 0.5, 3, params.groups.schemes())
    curves.score_method(method, None, params, split, prepared, load_faces(prepared, 32))
    assert asked == [("20s", "50s"), ("50s", "20s")]


def test_relative_targets_are_drawn_from_the_document_scored_on_the_most_faces() -> None:
    from agebench.report.curves_figure import target_document

    small = {"method": "a", "validation": {"n": {"aging": 100, "rejuvenation": 100}}}
    large = {"method": "b", "validation": {"n": {"aging": 200, "rejuvenation": 200}}}
    other = {"method": "c", "validation": {"n": {"aging": 200, "rejuvenation": 200}}}
    assert target_document([small, large, other]) is large
    assert target_document([small]) is small
