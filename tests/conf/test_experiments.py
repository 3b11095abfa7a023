"""Every experiment config composes, names the command that runs it, builds every arm of its
comparison, and trains for one batch (fast_dev_run) with generated stand-ins for downloads."""

from __future__ import annotations

import pytest

from qimia.experiment.arms import arms_from_config, match_arms, reference_arm
from qimia.experiment.build import build_datamodule, model_kwargs
from functools import partial

from qimia.app import compose, group_options
from qimia.experiment.train import run_training

compose_config = partial(compose, "models/train")

EXPERIMENTS = group_options("experiment")
CPU = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto", "trainer.precision=32-true",
       "+trainer.sync_batchnorm=false"]


def offline_overrides(name: str, data) -> list[str]:
    """Point each experiment at generated files (no download in tests)."""
    cfg = compose_config([f"experiment={name}"])
    target = cfg.data._target_
    extra = []
    if target.endswith("MNISTDataModule"):
        extra.append(f"data.path={data / 'mnist.pkl.gz'}")
    elif cfg.data.get("base", {}).get("_target_", "").endswith("MNISTDataModule"):
        extra.append(f"data.base.path={data / 'mnist.pkl.gz'}")
    elif target.endswith("ImageFolderDataModule"):
        extra += [f"data.root={data / 'imagenet'}", "data.image_size=32", "data.num_workers=0"]
    elif target.endswith("CIFAR10DataModule"):
        extra.append("data=digits")  # CIFAR-10 needs a download: the model/optimizer/trainer still run
    if cfg.model.get("base_checkpoint"):  # a base trained by an earlier step (evidence/transfer)
        extra.append("model.base_checkpoint=null")
    if target.endswith("TextDataModule") and "WikiText" in cfg.data.source._target_:
        extra += [f"data.source.path={data / 'wikitext'}", "data.vocab_size=300", "data.block_size=32"]
    if "ddp" in str(cfg.trainer.strategy) or cfg.trainer.accelerator != "auto":
        extra += [o for o in CPU if not o.startswith("+") or "sync_batchnorm" not in cfg.trainer]
        extra = [o.replace("+trainer.sync", "trainer.sync") if "sync_batchnorm" in cfg.trainer else o for o in extra]
    return extra


def test_there_is_an_experiment_for_every_row_of_the_proposal():
    needed = {"digits_resnet", "mnist_resnet", "cifar10_resnet", "imagenet_resnet50", "wikitext_lm", "text_lm",
              "unet_denoise", "weight_sharing_lm", "transfer_base", "transfer", "sweep_qimia_heads",
              "sweep_key_dim", "sweep_granularity"}
    assert needed <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_names_its_command(name):
    cfg = compose_config([f"experiment={name}"])
    assert cfg.name == name.replace("/", "_")
    assert cfg.command.split()[:3] in (["qimia", "train", f"experiment={name}"], ["qimia", "compare", f"experiment={name}"])
    # the command's own overrides compose too (a sweep at its first point)
    overrides = [o for o in cfg.command.split()[2:] if "<" not in o]
    compose_config([o if "[" in o else o.split(",")[0] for o in overrides])


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_one_batch(name, offline_data, tmp_path):
    tiny = name not in ("transfer", "transfer_base", "evidence/transfer")  # the transfer head's base config is already small
    overrides = [f"experiment={name}", *offline_overrides(name, offline_data), "trainer.fast_dev_run=true",
                 f"tiny={str(tiny).lower()}", "threads=1", "logger=[]", "trainer.enable_progress_bar=false"]
    cfg = compose_config(overrides)
    result = run_training(cfg, tmp_path)
    assert result.params > 0 and result.test, result
    # every arm of its comparison builds, parameter-matched to the reference
    arms = arms_from_config(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    match_arms(cfg.model.name, model_kwargs(cfg, datamodule), arms, reference_arm(cfg, arms), match=True)
    assert all(a.params > 0 for a in arms)


COMPARISONS = [n for n in EXPERIMENTS if compose_config([f"experiment={n}"]).command.split()[1] == "compare"]


# Arms no knob can bring within 1%: the width moves in coarse multiples, and the fine knob is the
# arm's own subject (key_dim of the key-dimension sweep) or bottoms out at half its value (the UNet's
# QIMIA key projections). The report flags them "(±1% not reachable)".
UNREACHABLE = {"unet_denoise": {"qimia"}, "sweep_key_dim": {"dk16"}, "sweep_qimia_heads": {"heads4"},
               "evidence/denoising": {"qimia"}, "evidence/denoising_mnist": {"qimia"}}
# Controls whose size is their point: a linear probe has no width; fine-tuning trains the base.
UNMATCHED = {"evidence/transfer": {"probe", "fine_tune"}}
# The GPU recipe the evidence issue specifies: residual, QIMIA and DenseFormer only.
CONTROLS = {"evidence/lm_gpu": {"residual", "dwa"}}


@pytest.mark.parametrize("name", COMPARISONS)
def test_every_shipped_comparison_is_parameter_matched_within_one_percent(name, offline_data):
    from qimia.experiment.compare import plan_arms

    cfg = compose_config([f"experiment={name}", *offline_overrides(name, offline_data)])
    arms, reference = plan_arms(cfg)
    assert CONTROLS.get(name, {"residual", "dwa", "attnres"}) <= {a.overrides.get("mixer") for a in arms}, "control arms"
    for arm in arms:
        if arm.name in UNMATCHED.get(name, set()):
            continue
        close = abs(arm.relative_gap) <= 0.01
        assert close == arm.within_tolerance
        assert close or arm.name in UNREACHABLE.get(name, set()), f"{arm.name}: {arm.params:,} vs {arm.target:,}"
        assert abs(arm.relative_gap) <= 0.02
