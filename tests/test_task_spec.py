"""TaskSpec, the task record generate, probes, external scoring and evaluate pass: its tasks.json entry keeps
the keys and order those folders have always had (the smoke run's files stay byte-identical), reads back to
the same task, and a method's tasks are derived from its own groups."""

from __future__ import annotations

import types

import pandas as pd

from agebench.params.sections import GroupsConfig, TasksConfig
from agebench.pipeline.generate import task_list
from agebench.pipeline.tasks import TaskSpec


def test_record_keys_order_and_round_trip() -> None:
    spec = TaskSpec("pair", "young", "old", "20-29", "60+", common=False)
    record = spec.record(7)
    assert list(record) == ["scheme", "source", "target", "method_source", "method_target", "common", "n"]
    assert record["n"] == 7 and record["common"] is False
    assert TaskSpec.from_record(record) == spec
    # an entry written without the method's groups (scoring needs only the protocol's) reads as the same groups
    assert TaskSpec.from_record({"scheme": "pair", "source": "old", "target": "young", "common": True}) == (
        TaskSpec.same_groups("pair", "old", "young")
    )


def test_test_rows_are_the_source_groups_test_faces_in_index_order() -> None:
    index = pd.DataFrame(
        {
            "row": [0, 1, 2, 3, 4],
            "split": ["test", "train", "test", "test", "test"],
            "pair": ["young", "young", "old", "young", "young"],
        }
    )
    assert TaskSpec.same_groups("pair", "young", "old").test_rows(index).tolist() == [0, 3, 4]
    assert TaskSpec.same_groups("pair", "old", "young").test_rows(index).tolist() == [2]


def test_task_list_maps_protocol_groups_to_the_methods_groups() -> None:
    groups, common = GroupsConfig(), TasksConfig()
    # A method on another scheme: each common task's groups become the method's groups containing them.
    scheme = next(s for s in groups.schemes() if s != "pair")
    names = list(groups.schemes()[scheme])
    method = types.SimpleNamespace(scheme=scheme, supported_tasks=lambda: [(names[0], names[1])])
    tasks = task_list(method, groups, common, extra_tasks=True)
    own = groups.schemes()[scheme]
    for task_id, task in common.items():
        t = tasks[task_id]
        assert (t.scheme, t.source, t.target, t.common) == (task.scheme, task.source, task.target, True)
        for protocol_group, method_group in ((t.source, t.method_source), (t.target, t.method_target)):
            low, high = groups.schemes()[t.scheme][protocol_group]
            assert own[method_group][0] <= low and high <= own[method_group][1]
    extra = tasks[f"{scheme}_{names[0]}_to_{names[1]}"]
    assert extra == TaskSpec.same_groups(scheme, names[0], names[1], common=False)
    assert set(task_list(method, groups, common, extra_tasks=False)) == {k for k, _ in common.items()}
