"""LightningModule behaviour per stage, optimiser groups, poly schedule, non-finite skipping, data order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from cinet.build import builders, training
from cinet.config import Config, StageConfig, load_config
from cinet.engine.datamodule import ResumableDataLoader, SeededDataset, ShardedSampler
from cinet.engine.module import NonFiniteLossError, PolyLR

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def _module(variant: str, stage: int, **overrides: Any) -> Any:
    cfg = load_config(SMOKE, [f"model.variant={variant}", *(f"{k}={v}" for k, v in overrides.items())])
    dm = builders.build_datamodule(cfg)
    st = next(s for s in cfg.train.stages if s.stage == stage)
    return builders.build_module(cfg, dm.info, st), dm


def _batch(dm: Any) -> dict[str, Any]:
    from cinet.data.base import collate

    ds = dm.dataset("train")
    return collate([ds[i] for i in range(2)])


def _step_terms(module: Any, batch: dict[str, Any]) -> tuple[dict[str, float], list]:
    """Run training_step outside a Trainer; return the logged loss terms and the ideal labels the model got."""
    logged: dict[str, float] = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    seen: list = []
    forward = module.model.forward

    def spy(images: torch.Tensor, **kw: Any) -> Any:
        seen.append(kw.get("ideal_labels"))
        return forward(images, **kw)

    module.model.forward = spy  # type: ignore[method-assign]
    total = module.training_step(batch, 0)
    assert torch.isfinite(total)
    return {k.split("/", 1)[1]: v for k, v in logged.items() if k.startswith("train/")}, seen


def test_stage1_feeds_ideal_map_without_att() -> None:
    module, dm = _module("cinet", 1)
    batch = _batch(dm)
    terms, seen = _step_terms(module, batch)
    assert seen[0] is not None and torch.equal(seen[0], batch["labels"])
    assert terms["att"] == 0.0 and terms["con"] == 0.0
    assert terms["depth"] > 0 and terms["seg"] > 0
    assert terms["total"] == pytest.approx(terms["depth"] + 0.3 * terms["seg"], rel=1e-5)


def test_stage2_learns_the_map_with_att() -> None:
    module, dm = _module("cinet", 2)
    terms, seen = _step_terms(module, _batch(dm))
    assert seen[0] is None
    assert terms["att"] > 0 and terms["con"] == 0.0


def test_stage3_adds_consistency_for_cinet_only() -> None:
    module, dm = _module("cinet", 3)
    terms, _ = _step_terms(module, _batch(dm))
    assert terms["con"] > 0 and terms["att"] > 0
    module, dm = _module("sum_fsm", 3)
    terms, _ = _step_terms(module, _batch(dm))
    assert terms["con"] == 0.0 and terms["att"] > 0


def test_variant_without_sum_gets_no_ideal_map() -> None:
    module, dm = _module("fsm", 1)
    terms, seen = _step_terms(module, _batch(dm))
    assert seen[0] is None and terms["att"] == 0.0


def test_param_groups_encoder_at_tenth_lr() -> None:
    module, _ = _module("cinet", 3)
    conf = module.configure_optimizers()
    opt = conf["optimizer"]
    assert isinstance(opt, torch.optim.SGD)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["new"]["lr"] == pytest.approx(1e-3)
    assert groups["encoder"]["lr"] == pytest.approx(1e-4)
    assert groups["loss"]["lr"] == pytest.approx(1e-3) and groups["loss"]["weight_decay"] == 0.0
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 5e-4
    enc = {id(p) for p in module.model.encoder.parameters()}
    assert {id(p) for p in groups["encoder"]["params"]} == enc
    assert not enc & {id(p) for p in groups["new"]["params"]}
    assert groups["sharing"]["lr"] == pytest.approx(1e-3)  # train.sharing_lr_mult 1: the paper's new layers
    assert {id(p) for p in groups["sharing"]["params"]} == {id(p) for p in module.model.share.parameters()}
    n_all = sum(1 for _ in module.model.parameters()) + sum(1 for _ in module.loss.parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == n_all
    # in stages 1-2 the learned sigmas of L_con do not train
    module, _ = _module("cinet", 2)
    names = [g["name"] for g in module.configure_optimizers()["optimizer"].param_groups]
    assert names == ["encoder", "new", "sharing"]
    # the sharing modules' own factor; a variant without them has no such group
    module, _ = _module("fsm", 1, **{"train.sharing_lr_mult": 0.1})
    groups = {g["name"]: g for g in module.configure_optimizers()["optimizer"].param_groups}
    assert groups["sharing"]["lr"] == pytest.approx(0.1 * groups["new"]["lr"])
    module, _ = _module("sum", 1)
    assert "sharing" not in [g["name"] for g in module.configure_optimizers()["optimizer"].param_groups]


def test_poly_schedule() -> None:
    poly = PolyLR(100, 0.9)
    assert poly(0) == 1.0
    assert poly(50) == pytest.approx(0.5**0.9)
    assert poly(99) == pytest.approx(0.01**0.9)
    assert poly(100) == 0.0 and poly(150) == 0.0
    assert PolyLR(100, 0.0)(99) == 1.0


def test_nonfinite_steps_are_skipped_then_stop(tmp_path: Path) -> None:
    module, dm = _module("baseline", 1, **{"train.max_nonfinite": 2})
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    loss_forward = module.loss.forward

    def nan_loss(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        terms = loss_forward(*args, **kwargs)
        terms["total"] = terms["total"] * float("nan")
        return terms

    module.loss.forward = nan_loss  # type: ignore[method-assign]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        use_distributed_sampler=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite"):
        trainer.fit(module, datamodule=dm)
    assert module.nonfinite_total == 3
    after = module.model.state_dict()
    for k, v in before.items():
        if "running" in k or "num_batches_tracked" in k:
            continue  # BN statistics update in the forward pass
        assert torch.equal(v, after[k]), k


def test_sampler_is_seeded_sharded_and_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    s = ShardedSampler(10, shuffle=True, seed=3, with_seed=False)
    s.set_epoch(0)
    a = list(s)
    assert sorted(a) == list(range(10)) and a == list(s)
    s.set_epoch(1)
    assert list(s) != a
    s.set_epoch(0)
    s.skip = 4
    assert list(s) == a[4:]
    assert list(s) == a  # skip applies once
    import cinet.engine.datamodule as dmod

    shards = []
    for rank in (0, 1, 2):
        monkeypatch.setattr(dmod, "dist_info", lambda r=rank: (r, 3))
        shards.append(list(ShardedSampler(10, shuffle=True, seed=3, with_seed=False)))
    assert [len(x) for x in shards] == [4, 4, 4]
    assert set().union(*shards) == set(range(10))
    monkeypatch.setattr(dmod, "dist_info", lambda: (2, 3))
    assert list(ShardedSampler(10, shuffle=False, pad=False, with_seed=False)) == [2, 5, 8]


def test_seeded_dataset_is_independent_of_global_rng() -> None:
    class Noise(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.rand(3)

    ds = SeededDataset(Noise())
    torch.manual_seed(1)
    a = ds[(2, 123)]
    state = torch.random.get_rng_state()
    torch.manual_seed(99)
    b = ds[(2, 123)]
    assert torch.equal(a, b)
    torch.manual_seed(1)
    _ = ds[(2, 123)]
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched


def test_seeded_draws_equal_torch_manual_seed() -> None:
    # _seeded seeds only the CPU generator (no accelerator queue): the draws are those of torch.manual_seed
    from cinet.engine.datamodule import _seeded

    torch.manual_seed(7)
    expected = torch.rand(5), torch.randint(0, 100, (3,))
    torch.manual_seed(1)
    with _seeded(7):
        got = torch.rand(5), torch.randint(0, 100, (3,))
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_loader_state_positions_the_sampler() -> None:
    sampler = ShardedSampler(12, shuffle=True, seed=0, with_seed=False)
    loader = ResumableDataLoader(list(range(12)), batch_size=3, sampler=sampler, progress=lambda: 2)
    sampler.set_epoch(5)
    assert loader.state_dict() == {"epoch": 5, "batches": 2}
    sampler.set_epoch(5)
    full = [b.tolist() for b in loader]
    loader.load_state_dict({"epoch": 5, "batches": 2})
    assert [b.tolist() for b in loader] == full[2:]
    loader.load_state_dict({"epoch": 5, "batches": 4})  # epoch was complete: next epoch from its start
    assert sampler.epoch == 6 and sampler.skip == 0


def test_stage_plan_and_trainer_kwargs() -> None:
    cfg = load_config(SMOKE, ["stage=2", "trainer.strategy=ddp", "trainer.devices=2", "trainer.precision=32"])
    assert [s.stage for s in training.stage_plan(cfg)] == [2]
    kw = builders.trainer_kwargs(cfg, StageConfig(stage=1))
    assert kw["strategy"] == "ddp_find_unused_parameters_true"  # SUM's Q/K get no gradient in stage 1
    assert kw["devices"] == 2 and kw["precision"] == "32-true" and kw["use_distributed_sampler"] is False
    assert builders.trainer_kwargs(cfg, StageConfig(stage=2))["strategy"] == "ddp"


def test_auto_strategy_with_several_processes_tells_ddp_of_unused_parameters() -> None:
    """Under ``auto`` Lightning picks plain DDP for two processes: the default variant's stage 1 (no gradient to
    the SUM's Q/K) crashed at its second step."""
    cfg = load_config(SMOKE, ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32"])
    assert cfg.trainer.strategy == "auto"
    assert builders.trainer_kwargs(cfg, StageConfig(stage=1))["strategy"] == "ddp_find_unused_parameters_true"
    assert builders.trainer_kwargs(cfg, StageConfig(stage=2))["strategy"] == "auto"  # every parameter is used
    one = load_config(SMOKE, ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32"])
    assert builders.trainer_kwargs(one, StageConfig(stage=1))["strategy"] == "auto"  # one process: no DDP


def test_hardware_that_cannot_run_here_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from cinet.errors import ConfigError

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    cfg = load_config(SMOKE, ["trainer.accelerator=cpu", "trainer.devices=3", "trainer.precision=32"])
    with pytest.raises(
        ConfigError, match=r"trainer.devices='3': 3 CPU training processes on this machine's 2 cores"
    ):
        builders.check_trainer_hardware(cfg)
    builders.check_trainer_hardware(load_config(SMOKE, ["trainer.accelerator=cpu", "trainer.devices=2"]))
    for key in ("NODE_RANK", "SLURM_NTASKS", "SLURM_JOB_ID", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)
    cfg = load_config(SMOKE, ["trainer.accelerator=cpu", "trainer.num_nodes=2", "trainer.precision=32"])
    with pytest.raises(ConfigError, match=r"trainer\.num_nodes=2: no multi-node launcher found"):
        builders.check_trainer_hardware(cfg)  # it waited for the other node forever, deaf to Ctrl-C


@pytest.mark.parametrize(
    ("bf16_units", "expected"),
    [({"amx_bf16": True}, "bf16-mixed"), ({"avx512_bf16": True}, "bf16-mixed"), ({}, "32-true")],
)
def test_auto_precision_reaches_the_trainer(monkeypatch, bf16_units, expected) -> None:
    """``trainer.precision=auto`` (the default) follows the CPU's bf16 units (issue #27; probe mocked)."""
    import cinet.utils.precision as precision

    monkeypatch.setattr(precision, "cpu_features", lambda: {"cpu_name": "test", **bf16_units})
    cfg = load_config(SMOKE, ["trainer.precision=auto"])
    assert builders.trainer_kwargs(cfg, StageConfig(stage=1))["precision"] == expected
    assert Config().trainer.precision == "auto"
    assert builders.build_test_trainer(cfg).precision == "32-true"  # evaluation: float32 on every machine
    explicit = load_config(SMOKE, ["trainer.precision=bf16-mixed"])
    assert builders.build_test_trainer(explicit).precision == "bf16-mixed"


def test_class_weight_modes() -> None:
    cfg = load_config(SMOKE)
    info = builders.build_datamodule(cfg).info
    assert builders.build_class_weights(cfg, info) is None  # "batch": Eq. 12 weights per batch, in the loss
    cfg = load_config(SMOKE, ["loss.class_weights=none"])
    assert torch.equal(builders.build_class_weights(cfg, info), torch.ones(info.num_classes))
    cfg = load_config(SMOKE, ["loss.class_weights=dataset"])
    w = builders.build_class_weights(cfg, info)
    assert w.shape == (info.num_classes,) and bool(((w >= 0) & (w <= 1)).all())
    assert int(w.argmin()) == info.class_names.index("wall")  # the most frequent class gets the lowest weight
