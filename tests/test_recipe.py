"""The recipe table (paper Tables 1–2 x Sec. 4.2): terms, attention map, what trains, DDP; and its readers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from cinet.config import StageConfig, load_config
from cinet.errors import ConfigError
from cinet.models import build_model
from cinet.recipe import SCHEDULES, TERMS, VARIANTS, stage_recipe, variant

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def test_paper_schedule_by_variant() -> None:
    def r(name: str, stage: int, schedule: str = "paper"):  # type: ignore[no-untyped-def]
        return stage_recipe(name, stage, schedule)

    s1, s2, s3 = (r("cinet", s) for s in (1, 2, 3))
    assert s1.terms == {"depth", "seg"} and s1.uses_ideal_map
    assert s2.terms == {"depth", "seg", "att"} and not s2.uses_ideal_map
    assert s3.terms == {"depth", "seg", "att", "con"}
    assert r("sum_fsm", 3).terms == {"depth", "seg", "att"}
    assert all(r("baseline", s).terms == {"depth", "seg"} for s in (1, 2, 3))
    # the unsupervised SUM never sees the ideal map nor L_att
    assert all(
        r("sum_unsup", s).terms == {"depth", "seg"} and not r("sum_unsup", s).uses_ideal_map
        for s in (1, 2, 3)
    )
    assert all(r("depth_only", s).terms == {"depth"} for s in (1, 2, 3))
    assert all(r("seg_only", s).terms == {"seg"} for s in (1, 2, 3))
    assert all(r("seg_only", s).tasks == ("seg",) for s in (1, 2, 3))
    # what trains: L_con's sigmas only in stage 3 of cinet; DDP told about Q/K without gradient in stage 1
    assert [x.trains_loss_parameters for x in (s1, s2, s3)] == [False, False, True]
    assert [x.ddp_find_unused for x in (s1, s2, s3)] == [True, False, False]
    assert not r("baseline", 1).ddp_find_unused and not r("sum_unsup", 1).ddp_find_unused


def test_learned_and_handover_schedules() -> None:
    l1 = stage_recipe("cinet", 1, "learned")
    assert l1.terms == {"depth", "seg", "att"} and not l1.uses_ideal_map
    assert not l1.ddp_find_unused
    h2 = stage_recipe("cinet", 2, "handover", handover_epochs=2.0)
    assert h2.uses_ideal_map and h2.terms == {"depth", "seg", "att"}
    # w falls linearly from 1 to 0 over handover_epochs * steps_per_epoch steps, then stays 0
    assert [h2.ideal_weight(s, 10) for s in (0, 5, 10, 20, 30)] == [1.0, 0.75, 0.5, 0.0, 0.0]
    assert stage_recipe("cinet", 1).ideal_weight(7, 10) == 1.0
    assert stage_recipe("cinet", 2).ideal_weight(0, 10) == 0.0
    # a variant without a supervised SUM never takes the ideal map, whatever the schedule
    assert stage_recipe("sum_unsup", 2, "handover").ideal_weight(0, 10) == 0.0


def test_unknown_schedule_names_the_argument_and_the_config_key() -> None:
    """The library says which argument (ValueError); the build layer names the config key (ConfigError)."""
    from cinet.build.builders import build_recipe

    with pytest.raises(ValueError, match=r"^schedule: unknown schedule 'x'"):
        stage_recipe("cinet", 1, "x")
    with pytest.raises(ValueError, match=r"^stage: must be 1, 2 or 3"):
        stage_recipe("cinet", 4)
    with pytest.raises(ValueError, match=r"^variant: unknown variant 'nope'"):
        variant("nope")
    cfg = load_config(SMOKE)
    cfg.train.schedule = "x"  # past the schema's check: the builder still names the key
    with pytest.raises(ConfigError, match=r"^train\.schedule: unknown schedule 'x'"):
        build_recipe(cfg, 1)
    with pytest.raises(ConfigError, match=r"config key 'train\.schedule': 'x' is not one of paper, learned"):
        load_config(SMOKE, ["train.schedule=x"])
    with pytest.raises(ConfigError, match=r"config key 'model\.variant': 'nope' is not one of baseline, sum"):
        load_config(SMOKE, ["model.variant=nope"])


def test_model_errors_name_the_config_key() -> None:
    """A model argument the library refuses (ValueError) reaches the user as a ConfigError naming model.*."""
    from cinet.build.builders import build_model as build_from_config

    for override, key in (
        ("model.attention_norm=softmax", "model.attention_norm"),
        ("model.attention_impl=fast", "model.attention_impl"),
        ("model.decoder_channels=[8,8]", "model.decoder_channels"),
        ("model.depth_init=0", "model.depth_init"),
        ("model.qk_channels=0", "model.qk_channels"),
    ):
        cfg = load_config(SMOKE, [override])
        with pytest.raises(ConfigError, match=rf"^{key}: "):
            build_from_config(cfg, 3)


def test_handover_mixes_the_two_maps() -> None:
    """w A + (1 - w) A~: the output at w = 0.25 is the same mix of the ideal-map and the learned-map outputs."""
    model = build_model(
        variant="sum", encoder="resnet18", num_classes=4, channels=16, qk_channels=4,
        decoder_channels=(8, 8, 8), zero_init_sum=False,
    ).eval()  # fmt: skip
    x = torch.randn(1, 3, 32, 40)
    labels = torch.randint(0, 4, (1, 32, 40))
    feats = {}
    model.sum.register_forward_hook(lambda m, i, o: feats.__setitem__("y", o[0]))
    with torch.no_grad():
        model(x, ideal_labels=labels)
        ideal = feats["y"].clone()
        model(x)
        learned = feats["y"].clone()
        out = model(x, ideal_labels=labels, ideal_weight=0.25)
    torch.testing.assert_close(feats["y"], 0.25 * ideal + 0.75 * learned, rtol=1e-5, atol=1e-6)
    assert not out.attention.given  # part of the map is learned: L_att applies


@pytest.mark.parametrize("variant_name", list(VARIANTS))
def test_every_variant_has_a_stage_row(variant_name: str) -> None:
    spec = variant(variant_name)
    assert spec.title  # the row's name in cinet ablate's tables
    for schedule in SCHEDULES:
        for stage in (1, 2, 3):
            terms = stage_recipe(variant_name, stage, schedule).terms
            assert terms and terms <= spec.loss_terms <= set(TERMS)


def test_the_engine_reads_the_recipe() -> None:
    """The module of a stage trains its recipe's terms and the trainer gets its DDP setting from it."""
    from cinet.build import builders

    cfg = load_config(SMOKE, ["model.variant=cinet", "trainer.strategy=ddp"])
    dm = builders.build_datamodule(cfg)
    for stage in (1, 2, 3):
        recipe = stage_recipe("cinet", stage)
        module = builders.build_module(cfg, dm.info, StageConfig(stage=stage))
        assert module.recipe == recipe and module.stage == stage
        assert all(p.requires_grad == recipe.trains_loss_parameters for p in module.loss.parameters())
        strategy = builders.trainer_kwargs(cfg, StageConfig(stage=stage))["strategy"]
        assert strategy.endswith("_find_unused_parameters_true") == recipe.ddp_find_unused


def test_term_names_are_spelled_once() -> None:
    """Outside the recipe table no module spells the tuple of top-level loss terms again."""
    src = ROOT / "src" / "cinet"
    spelled = []
    for path in src.rglob("*.py"):
        if path.name == "recipe.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Tuple) and [getattr(e, "value", None) for e in node.elts] == list(TERMS):
                spelled.append(f"{path.relative_to(src)}:{node.lineno}")
    assert not spelled, spelled
