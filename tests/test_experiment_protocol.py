"""The experiment protocol and registry: overrides, type checks, unknown keys, presets, field help."""

import dataclasses
from typing import Optional, Tuple

import pytest

from lazyrich.experiments import registry
from lazyrich.experiments.protocol import (Experiment, Preset, apply_overrides, config_from_dict, config_to_dict,
                                           field_help)


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """A toy config.

    Attributes
    ----------
    n : int
        Number of things.
    lr : float
        Step size.
    tag : str, optional
        A label or none.
    widths : tuple of int
        Layer widths.
    flag : bool
        A switch.
    """

    n: int = 3
    lr: float = 0.5
    tag: Optional[str] = None
    widths: Tuple[int, ...] = (4, 8)
    flag: bool = False


def test_overrides_parse_by_field_type():
    c = apply_overrides(ToyConfig(), ["n=7", "lr=1e-3", "tag=none", "widths=1,2,3", "flag=yes"])
    assert c == ToyConfig(n=7, lr=1e-3, tag=None, widths=(1, 2, 3), flag=True)
    assert apply_overrides(ToyConfig(), ["widths=[]"]).widths == ()


@pytest.mark.parametrize("item, match", [
    ("m=1", "unknown config key 'm' for the toy experiment; valid keys: n, lr, tag, widths, flag"),
    ("n=1.5", "n expects an integer"),
    ("flag=maybe", "flag expects true or false"),
    ("lr", "not of the form key=value"),
])
def test_bad_overrides_name_the_fix(item, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(ToyConfig(), [item], experiment="toy")


def test_wrong_python_type_is_rejected():
    with pytest.raises(TypeError, match="n must be int"):
        config_from_dict(ToyConfig, {"n": "3"})


def test_json_round_trip_and_field_help():
    c = ToyConfig(n=2, widths=(5,))
    d = config_to_dict(c, "toy")
    assert d["experiment"] == "toy" and d["widths"] == [5]
    assert config_from_dict(ToyConfig, d) == c
    rows = {name: (tp, default, meaning) for name, tp, default, meaning in field_help(ToyConfig)}
    assert rows["n"] == ("int", 3, "Number of things.")
    assert rows["widths"][2] == "Layer widths."


def test_registry_lists_cone_and_rejects_unknown_names():
    assert "cone" in registry.names()
    cone = registry.get("cone")
    assert set(cone.presets) >= {"quick", "paper"}
    assert all(p.description for p in cone.presets.values())
    c = cone.config("quick", ["steps=500", "switch_points=0,100", "taus=100,200"])
    assert c.steps == 500 and c.switch_points == (0, 100)
    with pytest.raises(ValueError, match="unknown experiment 'nope'; choose one of .*cone"):
        registry.get("nope")
    with pytest.raises(ValueError, match="unknown preset 'big' for the cone experiment; choose one of quick"):
        cone.preset("big")


def test_register_adds_an_experiment():
    exp = Experiment(name="toy-test", description="a toy", config_class=ToyConfig,
                     presets={"one": Preset("the default toy", ToyConfig, grid={"n": (1, 2)})},
                     run=lambda config, out_dir: out_dir)
    registry.register(exp)
    try:
        assert registry.get("toy-test").preset("one") == ToyConfig()
        assert registry.get("toy-test").presets["one"].grid == {"n": (1, 2)}
    finally:
        registry._REGISTRY.pop("toy-test")
    with pytest.raises(TypeError, match="register expects an Experiment"):
        registry.register("cone")


def test_override_supplies_a_field_the_preset_needs(tmp_path):
    """A preset that is invalid on its own (lenet-rebalance `paper` needs data_dir=) is valid once the
    override gives the field: overrides are applied before the config is checked."""
    from lazyrich.experiments import registry

    exp = registry.get("lenet-rebalance")
    with pytest.raises(ValueError, match="set data_dir="):
        exp.config("paper")
    cfg = exp.config("paper", [f"data_dir={tmp_path}"])
    assert cfg.data_dir == str(tmp_path) and cfg.dataset == "mnist"
    with pytest.raises(ValueError, match="unknown preset"):
        exp.config("nope", [f"data_dir={tmp_path}"])


def test_torch_threads_sets_and_restores_also_on_error():
    import torch

    from lazyrich.experiments.protocol import torch_threads

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(target):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):  # None leaves torch's setting
        assert torch.get_num_threads() == before
