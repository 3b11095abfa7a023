"""``qimia memory [key=value ...]``: the task function of the Hydra app ``conf/memory/train.yaml``.

    qimia memory model=dnc task=repeat_copy trainer.max_steps=2000
    qimia memory model=ntm task=copy experiment=ntm_paper         # RMSprop, batch 1, value clipping
    qimia memory --help                                           # the groups and the config
"""

from __future__ import annotations

from omegaconf import DictConfig


def main(cfg: DictConfig) -> float | None:
    """Train and test one model in the Hydra job's folder; print a summary; return the test
    wrong bits per sequence at the training lengths (what a sweeper minimises)."""
    from qimia.app import output_dir
    from qimia.memory.experiment import train

    results = train(cfg, output_dir())
    test = results["test"]
    bits, wrong = test.get("bits", float("nan")), test.get("wrong_bits", float("nan"))
    print(f"[memory] {results['model']} on {results['task']}: {results['parameters']:,} parameters, "
          f"{results['steps']} steps ({results['sequences']:,} sequences); test bits {bits:.3f}, "
          f"wrong bits {wrong:.3f} per sequence; outputs in {output_dir()}")
    return test.get("wrong_bits")
