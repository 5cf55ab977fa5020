"""Checks of cinet.checks that had no test of their own where they lived before (issue 24, item 4): the run
directory refusals (moved out of ``engine.rundir.prepare_run_dir``) and the training loss without the per-step
label-range check (the data checks run before training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cinet.checks.outputs import check_run_dir
from cinet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def _run_dir(path: Path, *stages: int) -> Path:
    path.mkdir(parents=True)
    (path / "state.json").write_text("{}", encoding="utf-8")
    for stage in stages:
        (path / f"stage{stage}").mkdir()
        (path / f"stage{stage}" / "last.ckpt").write_bytes(b"")
    return path


def test_run_dir_refusals_name_the_folder_and_the_option(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run", 1, 2)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.png").write_bytes(b"")
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("config.yaml", "notes.txt", "000464_depth.png"):
        (mine / name).write_text("keep", encoding="utf-8")

    cases = [
        (other, {"resume": True}, f"{other}: not a cinet run directory (no state.json); nothing to resume"),
        (run, {}, f"{run}: run directory exists (use --resume {run} to continue it, or --overwrite)"),
        (
            other,
            {"overwrite": True},
            f"{other}: exists and is not a cinet run directory; refusing to overwrite it",
        ),
        (
            run,
            {"stage": 2},
            f"{run / 'stage2'}: stage 2 already has a checkpoint (use --resume {run} or --overwrite)",
        ),
        (  # a user's folder that holds a config.yaml among its own files: --overwrite deleted them
            mine,
            {"overwrite": True},
            f"{mine}: holds files cinet train did not write (000464_depth.png, notes.txt); refusing to overwrite it "
            "(nothing deleted): choose another --run-dir, or move them",
        ),
    ]
    for path, kw, message in cases:
        args = {"resume": False, "overwrite": False, "stage": None, **kw}
        with pytest.raises(ConfigError) as info:
            check_run_dir(path, **args)
        assert str(info.value) == message

    # what is allowed: a new or empty folder, --resume / --overwrite of a run directory, a stage without a checkpoint
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, kw in [
        (tmp_path / "new", {}),
        (empty, {}),
        (run, {"resume": True}),
        (run, {"overwrite": True}),
        (run, {"stage": 3}),
        (run, {"stage": 2, "overwrite": True}),
    ]:
        check_run_dir(path, **{"resume": False, "overwrite": False, "stage": None, **kw})


def test_prepare_run_dir_never_deletes_a_folder_cinet_did_not_make(tmp_path: Path) -> None:
    """The refusal is check_run_dir's; prepare_run_dir, called without it, still keeps a foreign folder."""
    from cinet.engine.rundir import prepare_run_dir

    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.png").write_bytes(b"x")
    prepare_run_dir(
        other, stages=[1, 2, 3], stage=None, resume=False, overwrite=True, write_config=lambda path: None
    )
    assert (other / "a.png").read_bytes() == b"x"


def test_the_training_loss_checks_no_label_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of the refuse-before-work kind in the training step: the engine's loss never calls check_labels
    (a device synchronisation per step) and gives the same L_seg as the checking one on valid labels."""
    import cinet.losses.segmentation as segmentation
    from cinet.build.builders import build_loss
    from cinet.build.data import dataset_info_from_config
    from cinet.config import load_config

    cfg = load_config(SMOKE)
    info = dataset_info_from_config(cfg.data)
    loss = build_loss(cfg, info)
    c = info.num_classes
    logits, labels = torch.randn(2, c, 5, 6), torch.randint(0, c, (2, 5, 6))
    labels[0, 0, :3] = info.ignore_index
    expected = segmentation.weighted_cross_entropy(logits, labels, c, info.ignore_index)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the label range was checked in the training step")

    monkeypatch.setattr(segmentation, "check_labels", fail)
    assert torch.equal(loss.seg_loss(logits, labels), expected)
    fixed = segmentation.WeightedCrossEntropy(c, info.ignore_index, torch.ones(c), validate_labels=False)
    fixed(logits, labels)  # with fixed class weights too
    with pytest.raises(AssertionError):  # the library's default still checks
        segmentation.weighted_cross_entropy(logits, labels, c, info.ignore_index)
