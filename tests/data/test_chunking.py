import numpy as np
import pytest
import torch

from qimia.data import ChunkingDataModule, ChunkingTask
from qimia.data.chunking import IGNORE, name_pool


def evaluate(text: str, modulus: int) -> dict:
    """An independent reading of one decoded sequence: run its statements, collect its queries.

    Returns ``values`` (name -> value), ``parent`` (name -> src), ``consts`` (name -> c),
    ``queries`` (the asked names, in order) and ``order`` (the names in definition order);
    asserts the grammar, that every src is defined before use and that every dst is fresh.
    """
    tokens = text.split(" ")
    values, parent, consts, order, queries = {"_": 0}, {}, {}, [], []
    i = 0
    while i < len(tokens) and tokens[i] != "?":
        dst, eq, src, plus, c, semi = tokens[i : i + 6]
        assert (eq, plus, semi) == ("=", "+", ";") and c.isdigit()
        assert src in values, f"{src} used before it is defined in {text!r}"
        assert dst not in values, f"{dst} defined twice in {text!r}"
        values[dst] = (values[src] + int(c)) % modulus
        parent[dst], consts[dst] = src, int(c)
        order.append(dst)
        i += 6
    while i < len(tokens):
        mark, name, colon = tokens[i : i + 3]
        assert (mark, colon) == ("?", ":")
        queries.append(name)
        i += 4
    return {"values": values, "parent": parent, "consts": consts, "queries": queries, "order": order}


def chain_of(name: str, parent: dict) -> list[str]:
    """The variables from the root to ``name``."""
    chain = [name]
    while parent[chain[-1]] != "_":
        chain.append(parent[chain[-1]])
    return chain[::-1]


TASK = ChunkingTask(chains=3, hops=3, distractors=2, modulus=7, names=20)


@pytest.fixture(scope="module")
def examples():
    return TASK.examples(200, np.random.default_rng(0))


def test_answers_equal_an_independent_evaluation_of_the_decoded_program(examples):
    inputs, targets = examples
    colon = TASK.token(":")
    for x, y in zip(inputs, targets):
        # the whole program: the inputs and the last answer (the one token the inputs lack)
        program = evaluate(TASK.decode([*x.tolist(), int(y[-1])]), TASK.modulus)
        answer_positions = (x == colon).nonzero().flatten().tolist()
        assert len(answer_positions) == len(program["queries"]) == TASK.chains
        for pos, name in zip(answer_positions, program["queries"]):
            assert TASK.decode([x[pos - 1]]) == name
            assert int(y[pos]) == program["values"][name]  # the digit's id is its value


def test_exactly_k_scored_targets_right_after_each_colon(examples):
    inputs, targets = examples
    L = 6 * TASK.hops * (TASK.chains + TASK.distractors) + 4 * TASK.chains
    assert TASK.length == L
    assert inputs.shape == targets.shape == (200, L - 1)
    assert inputs.dtype == targets.dtype == torch.long
    scored = targets != IGNORE
    assert (scored.sum(1) == TASK.chains).all()
    assert torch.equal(scored, inputs == TASK.token(":"))  # scored exactly where the input is ":"
    assert ((targets[scored] >= 0) & (targets[scored] < TASK.modulus)).all()
    assert torch.equal(inputs[:, 1:][scored[:, :-1]], targets[:, :-1][scored[:, :-1]])  # targets = next tokens
    assert set(targets[scored].tolist()) == set(range(TASK.modulus))  # every digit occurs as an answer


def test_chains_are_whole_interleaved_and_only_their_last_variables_of_queried_chains_are_asked(examples):
    inputs, targets = examples
    interleaved = 0
    for x, y in zip(inputs, targets):
        program = evaluate(TASK.decode([*x.tolist(), int(y[-1])]), TASK.modulus)
        parent, order = program["parent"], program["order"]
        assert len(order) == TASK.statements and len(set(order)) == TASK.statements  # distinct names
        used = set(parent.values())
        ends = [name for name in order if name not in used]  # the last variable of each chain
        assert len(ends) == TASK.chains + TASK.distractors
        chains = [chain_of(end, parent) for end in ends]
        assert all(len(chain) == TASK.hops for chain in chains)
        assert sorted(v for chain in chains for v in chain) == sorted(order)  # nothing outside a chain
        asked = program["queries"]
        assert len(set(asked)) == TASK.chains and set(asked) <= set(ends)  # never an intermediate variable
        assert len(set(ends) - set(asked)) == TASK.distractors  # the distractor chains are never asked
        position = {name: i for i, name in enumerate(order)}
        interleaved += any(position[c[-1]] - position[c[0]] != TASK.hops - 1 for c in chains)
    assert interleaved > 150  # a random merge, not one chain after the other


def test_copy_op_chases_the_roots_digit():
    task = ChunkingTask(chains=2, hops=4, distractors=1, op="copy")
    inputs, targets = task.examples(50, np.random.default_rng(1))
    for x, y in zip(inputs, targets):
        program = evaluate(task.decode([*x.tolist(), int(y[-1])]), task.modulus)
        parent, consts = program["parent"], program["consts"]
        assert all(c == 0 for name, c in consts.items() if parent[name] != "_")
        for name in program["queries"]:
            assert program["values"][name] == consts[chain_of(name, parent)[0]]


def test_vocabulary_and_decode():
    task = ChunkingTask()  # the defaults: 4 chains of 2 hops, 2 distractors, 48 names, modulus 10
    assert task.length == 6 * 2 * 6 + 4 * 4 == 88
    assert task.vocab_size == len(task.vocab) == len(set(task.vocab)) == 10 + 48 + 6
    assert task.vocab[:10] == [str(d) for d in range(10)]
    assert task.decode([0, task.token("_"), IGNORE]) == "0 _ ."
    assert len(set(name_pool(60))) == 60 and name_pool(3) == ["a", "b", "c"]


def test_splits_are_deterministic_distinct_and_independent_of_the_run_seed():
    small = {"chains": 2, "hops": 2, "distractors": 1, "train_size": 30, "val_size": 20, "test_size": 20}
    a, b = ChunkingDataModule(**small), ChunkingDataModule(**small, seed=5)
    a.setup()
    b.setup()
    for split in ("train_set", "val_set", "test_set"):
        for ta, tb in zip(getattr(a, split).tensors, getattr(b, split).tensors):
            assert torch.equal(ta, tb)
    assert len(a.train_set) == 30 and len(a.val_set) == 20
    assert not torch.equal(a.val_set.tensors[0], a.test_set.tensors[0])  # each split its own stream
    other = ChunkingDataModule(**small, data_seed=1).split("val")
    assert not torch.equal(other.tensors[0], a.val_set.tensors[0])
    assert a.net_kwargs == {"vocab_size": a.generator.vocab_size, "block_size": a.generator.length - 1}
    assert a.task_kwargs == {"chars_per_token": 1.0, "monitor": "acc"}
    assert a.task == "language_modeling"
    loader = ChunkingDataModule(**small, batch_size=8)
    loader.setup()
    x, y = next(iter(loader.train_dataloader()))
    assert x.shape == y.shape == (8, loader.generator.length - 1)


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"chains": 0}, "chains must be >= 1"),
        ({"hops": 0}, "hops must be >= 1"),
        ({"distractors": -1}, "distractors must be >= 0"),
        ({"modulus": 11}, "modulus must be in 2..10"),
        ({"modulus": 1}, "modulus must be in 2..10"),
        ({"chains": 5, "hops": 4, "distractors": 2, "names": 27}, r"names=27 is too small.*data.names=28"),
        ({"op": "mul"}, r"op must be one of \['add', 'copy'\]"),
        ({"train_size": 0}, "train_size must be >= 1"),
        ({"test_size": -3}, "test_size must be >= 1"),
        ({"data_seed": -1}, "data_seed must be >= 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_knob_validation(knobs, message):
    with pytest.raises(ValueError, match=message):
        ChunkingDataModule(**knobs)


def test_composed_config_builds_and_a_transformer_lm_runs_one_batch():
    import lightning as L

    from qimia.app import compose
    from qimia.experiment.build import build_datamodule, build_net, build_task

    cfg = compose("models/train", ["model=transformer_lm", "data=chunking", "data.train_size=16", "data.val_size=8",
                                   "data.test_size=8", "data.batch_size=8", "model.dim=16", "model.depth=2",
                                   "model.heads=2", "model.key_dim=8"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    net = build_net(cfg, datamodule)
    assert net.block_size == 87 and net.vocab_size == 64
    module = build_task(cfg, net, datamodule)
    assert module.monitor == "acc" and module.monitor_mode == "max"
    inputs, _ = next(iter(datamodule.test_dataloader()))
    with torch.no_grad():
        assert net(inputs).shape == (8, 87, 64)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["test/loss"] > 0
