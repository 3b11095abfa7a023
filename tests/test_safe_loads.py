"""No file is loaded in a way that can run code: every ``torch.load`` passes ``weights_only=True``
and no ``pickle.load`` / ``torch.load(weights_only=False)`` / ``numpy.load(allow_pickle=True)``
appears in the package (the MNIST pickle reader unpickles numpy arrays only, tested in
tests/data/test_mnist.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qimia"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _calls(tree: ast.AST, owner: str, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
            value = node.func.value
            if isinstance(value, ast.Name) and value.id == owner:
                yield node


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_load_is_weights_only(path):
    tree = ast.parse(path.read_text())
    for call in _calls(tree, "torch", "load"):
        flag = _keyword(call, "weights_only")
        assert isinstance(flag, ast.Constant) and flag.value is True, f"{path}:{call.lineno}: torch.load without weights_only=True"
    for call in _calls(tree, "pickle", "load"):
        raise AssertionError(f"{path}:{call.lineno}: pickle.load can run code from the file")
    for call in _calls(tree, "np", "load"):
        flag = _keyword(call, "allow_pickle")
        assert not (isinstance(flag, ast.Constant) and flag.value is True), f"{path}:{call.lineno}: allow_pickle=True"


def test_the_mnist_reader_refuses_a_pickle_that_would_run_code(tmp_path):
    import gzip
    import os
    import pickle

    from qimia.data.mnist import load_mnist_pkl

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(Payload(), f)
    with pytest.raises(ValueError, match="refusing to load posix.system|refusing to load os.system"):
        load_mnist_pkl(path)
    assert not (tmp_path / "pwned").exists()
