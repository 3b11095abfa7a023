"""Append-only, sharded, memory-mapped store of the dual-form memory.

One *slot* is one row that a recorded ``nn.Linear`` saw in one training step: its
key ``x_t`` (layer input, shape ``(d_key,)``), its value ``e_t = dL/dy_t`` (output
gradient, shape ``(d_value,)``) and metadata (step, example, label, task, use, position).

Layout of a store directory::

    manifest.json            # the commit point: layers, shards (+CRC32), per-step optimizer scalars
    w0.pt                    # W0 and b0 of every recorded layer (the state before step 0)
    checkpoint-<step>.pt     # model/optimizer state after the last committed step (for resume)
    shards/<L>-<n>.keys      # (rows, d_key)   float32|float16, raw C order
    shards/<L>-<n>.values    # (rows, d_value) float32|float16 (absent in keys-only mode)
    shards/<L>-<n>.meta      # (rows, 6)       int64: STEP, EXAMPLE, LABEL, TASK, USE, POS
    shards/<L>-<n>.vnorm     # (rows,)         float32: ||e_t|| computed from the fp32 value

A commit writes and fsyncs the shard files, then the checkpoint, then atomically
replaces the manifest. A process killed at any point (``kill -9``) therefore leaves
every previously committed shard intact; files of the interrupted commit are orphans
that :meth:`DualStore.open` (``resume``) deletes. Truncation is detected from file
sizes on open, bit-level corruption from CRC32 checksums (on first read, or up front
with ``verify="full"``).
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qimia.dual.errors import CorruptShardError, StoreError

FORMAT = "qimia.dual.store/1"
META_COLUMNS = ("step", "example", "label", "task", "use", "pos")
STEP, EXAMPLE, LABEL, TASK, USE, POS = range(len(META_COLUMNS))
_DTYPES = {"float32": np.float32, "float16": np.float16}
_VERIFY = ("size", "lazy", "full")


@dataclass(frozen=True)
class LayerSpec:
    """A recorded ``nn.Linear``: ``y = W x + b`` with ``W`` of shape ``(d_value, d_key)``.

    Attributes:
        name: module name in the model (``model.get_submodule(name)``).
        index: layer number (0 = input layer), the order of recording.
        d_key: input width (keys ``x_t``).
        d_value: output width (values ``e_t``).
        weight: parameter name of ``W`` in ``model.named_parameters()``.
        bias: parameter name of ``b`` or ``None``.
    """

    name: str
    index: int
    d_key: int
    d_value: int
    weight: str
    bias: str | None


@dataclass
class Shard:
    """Memory-mapped view of one shard of one layer (arrays open lazily)."""

    store: "DualStore"
    entry: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.entry["rows"])

    @property
    def first_step(self) -> int:
        return int(self.entry["first_step"])

    def _array(self, kind: str) -> np.ndarray:
        spec = self.store.layers[self.entry["layer"]]
        shapes = {"keys": (self.rows, spec.d_key), "values": (self.rows, spec.d_value),
                  "meta": (self.rows, len(META_COLUMNS)), "vnorm": (self.rows,)}
        dtypes = {"keys": self.store.dtype, "values": self.store.dtype, "meta": np.int64, "vnorm": np.float32}
        if kind == "values" and self.store.keys_only:
            raise StoreError("this store was recorded in keys-only mode (approximate): it holds no values e_t.")
        path = self.store.root / "shards" / f"{self.entry['file']}.{kind}"
        self.store._check_crc(path, self.entry["crc"][kind])
        if self.rows == 0:
            return np.zeros(shapes[kind], dtype=dtypes[kind])
        return np.memmap(path, dtype=dtypes[kind], mode="r", shape=shapes[kind])

    @property
    def keys(self) -> np.ndarray:
        """``(rows, d_key)`` keys ``x_t``."""
        return self._array("keys")

    @property
    def values(self) -> np.ndarray:
        """``(rows, d_value)`` values ``e_t = dL/dy_t``."""
        return self._array("values")

    @property
    def meta(self) -> np.ndarray:
        """``(rows, 6)`` int64 metadata, columns :data:`META_COLUMNS`."""
        return self._array("meta")

    @property
    def vnorm(self) -> np.ndarray:
        """``(rows,)`` float32 ``||e_t||`` (ones in keys-only mode)."""
        return self._array("vnorm")


def _write(path: Path, array: np.ndarray) -> int:
    """Write ``array`` raw (C order) and fsync; return its CRC32."""
    data = memoryview(np.ascontiguousarray(array)).cast("B")
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return zlib.crc32(data)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _crc_file(path: Path, block: int = 1 << 24) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(block):
            crc = zlib.crc32(chunk, crc)
    return crc


class DualStore:
    """The dual-form memory on disk. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, root: Path, manifest: dict[str, Any], verify: str) -> None:
        if verify not in _VERIFY:
            raise ValueError(f"verify must be one of {_VERIFY}, got {verify!r}.")
        self.root = root
        self.manifest = manifest
        self.verify_mode = verify
        self.layers = {name: LayerSpec(**spec) for name, spec in manifest["layers"].items()}
        self.dtype = _DTYPES[manifest["dtype"]]
        self._checked: set[Path] = set()
        self._meta_cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, path: str | os.PathLike, layers: list[LayerSpec], *, dtype: str = "float32",
               keys_only: bool = False, w0: Mapping[str, torch.Tensor] | None = None,
               info: Mapping[str, Any] | None = None, overwrite: bool = False) -> "DualStore":
        """Start an empty store at ``path`` for ``layers``; ``w0`` maps parameter names to initial tensors."""
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
        root = Path(path)
        if (root / "manifest.json").exists() and not overwrite:
            raise StoreError(f"{root} already holds a dual-form store; pass overwrite=True to replace it "
                             "or resume=True to continue recording into it.")
        if root.exists() and overwrite:
            _remove_store_files(root)
        (root / "shards").mkdir(parents=True, exist_ok=True)
        if w0 is not None:
            torch.save({k: v.detach().cpu().clone() for k, v in w0.items()}, root / "w0.pt")
        manifest = {"format": FORMAT, "dtype": dtype, "keys_only": bool(keys_only),
                    "layers": {s.name: asdict(s) for s in layers}, "shards": [], "steps": [],
                    "checkpoint": None, "info": dict(info or {})}
        _atomic_json(root / "manifest.json", manifest)
        return cls(root, manifest, "lazy")

    @classmethod
    def open(cls, path: str | os.PathLike, *, verify: str = "lazy", resume: bool = False) -> "DualStore":
        """Open a store. ``verify``: ``"size"`` (file sizes only), ``"lazy"`` (CRC on first read) or ``"full"``.

        With ``resume=True`` orphan files of an interrupted commit are deleted.
        """
        root = Path(path)
        mpath = root / "manifest.json"
        if not mpath.exists():
            raise StoreError(f"no dual-form store at {root} (manifest.json missing); record one first.")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise CorruptShardError(f"{mpath} is not valid JSON ({exc}); the store is damaged.") from exc
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{mpath} has format {manifest.get('format')!r}, expected {FORMAT!r}.")
        store = cls(root, manifest, verify)
        store._check_sizes()
        if verify == "full":
            store.verify()
        if resume:
            store._remove_orphans()
        return store

    # ------------------------------------------------------------------ properties
    @property
    def keys_only(self) -> bool:
        """True when only keys were recorded (approximate analysis, no exact reconstruction)."""
        return bool(self.manifest["keys_only"])

    @property
    def steps(self) -> list[dict[str, Any]]:
        """Per-step optimizer records, index = step (see :mod:`qimia.dual.optim_coeffs`)."""
        return self.manifest["steps"]

    @property
    def num_steps(self) -> int:
        return len(self.manifest["steps"])

    @property
    def info(self) -> dict[str, Any]:
        return self.manifest["info"]

    def layer(self, name_or_index: str | int) -> LayerSpec:
        """Look a layer up by module name or by index (0 = input layer)."""
        if isinstance(name_or_index, int):
            for spec in self.layers.values():
                if spec.index == name_or_index:
                    return spec
            raise KeyError(f"no layer with index {name_or_index}; layers are {self.layer_names}.")
        if name_or_index not in self.layers:
            raise KeyError(f"no recorded layer {name_or_index!r}; layers are {self.layer_names}.")
        return self.layers[name_or_index]

    @property
    def layer_names(self) -> list[str]:
        return [s.name for s in sorted(self.layers.values(), key=lambda s: s.index)]

    def shards(self, layer: str | int) -> list[Shard]:
        name = self.layer(layer).name
        return [Shard(self, e) for e in self.manifest["shards"] if e["layer"] == name]

    def num_slots(self, layer: str | int) -> int:
        return sum(s.rows for s in self.shards(layer))

    def meta(self, layer: str | int) -> np.ndarray:
        """``(N, 6)`` int64 metadata of all slots of ``layer`` in slot order (cached)."""
        name = self.layer(layer).name
        if name not in self._meta_cache:
            parts = [s.meta for s in self.shards(name)]
            self._meta_cache[name] = (np.concatenate(parts) if parts
                                      else np.zeros((0, len(META_COLUMNS)), np.int64))
        return self._meta_cache[name]

    def w0(self) -> dict[str, torch.Tensor]:
        """Initial parameters ``{param_name: tensor}`` saved at creation."""
        path = self.root / "w0.pt"
        if not path.exists():
            raise StoreError(f"{path} is missing: the store has no initial weights W0.")
        return torch.load(path, map_location="cpu", weights_only=True)

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in (self.root / "shards").iterdir())

    # ------------------------------------------------------------------ writing
    def append(self, steps: list[dict[str, Any]],
               slots: Mapping[str, tuple[np.ndarray, ...]],
               checkpoint: Mapping[str, Any] | None = None) -> None:
        """Commit ``steps`` (consecutive, starting at :attr:`num_steps`) and their slots atomically.

        Args:
            steps: optimizer records of the new steps.
            slots: ``{layer: (keys (n, d_key), values (n, d_value) or None, meta (n, 6)[, vnorm (n,)])}``;
                keys/values are cast to the store dtype; ``||e_t||`` is computed in fp32 unless given.
            checkpoint: optional state (model/optimizer/...) saved for resume after these steps.
        """
        first = self.num_steps
        for i, rec in enumerate(steps):
            if rec.get("step") != first + i:
                raise StoreError(f"step records must continue at step {first + i}, got {rec.get('step')}.")
        unknown = set(slots) - set(self.layers)
        if unknown:
            raise StoreError(f"slots for unrecorded layers {sorted(unknown)}; layers are {self.layer_names}.")
        shard_no = len(self.manifest["shards"])
        new_entries = []
        for name, (keys, values, meta, *given_norm) in slots.items():
            spec = self.layers[name]
            n = keys.shape[0]
            if keys.shape != (n, spec.d_key) or meta.shape != (n, len(META_COLUMNS)):
                raise StoreError(f"layer {name}: keys {keys.shape} / meta {meta.shape} do not match "
                                 f"(n, {spec.d_key}) / (n, {len(META_COLUMNS)}).")
            if self.keys_only:
                vnorm = np.ones(n, np.float32)
            elif given_norm:
                vnorm = np.asarray(given_norm[0], np.float32).reshape(n)
            else:
                if values is None or values.shape != (n, spec.d_value):
                    raise StoreError(f"layer {name}: values must have shape ({n}, {spec.d_value}).")
                vnorm = np.linalg.norm(values.astype(np.float32, copy=False), axis=1).astype(np.float32)
            base = f"{spec.index:02d}-{shard_no:06d}"
            shard_no += 1
            d = self.root / "shards"
            crc = {"keys": _write(d / f"{base}.keys", keys.astype(self.dtype, copy=False)),
                   "meta": _write(d / f"{base}.meta", meta.astype(np.int64, copy=False)),
                   "vnorm": _write(d / f"{base}.vnorm", vnorm)}
            if not self.keys_only:
                crc["values"] = _write(d / f"{base}.values", values.astype(self.dtype, copy=False))
            new_entries.append({"layer": name, "file": base, "rows": int(n), "first_step": first,
                                "last_step": first + len(steps) - 1, "crc": crc})
        old_ckpt = self.manifest["checkpoint"]
        new_manifest = dict(self.manifest)
        if checkpoint is not None:
            ckpt_name = f"checkpoint-{first + len(steps)}.pt"
            tmp = self.root / (ckpt_name + ".tmp")
            torch.save(dict(checkpoint), tmp)
            os.replace(tmp, self.root / ckpt_name)
            new_manifest["checkpoint"] = ckpt_name
        new_manifest["shards"] = self.manifest["shards"] + new_entries
        new_manifest["steps"] = self.manifest["steps"] + list(steps)
        _atomic_json(self.root / "manifest.json", new_manifest)
        self.manifest = new_manifest
        self._meta_cache.clear()
        if checkpoint is not None and old_ckpt and old_ckpt != new_manifest["checkpoint"]:
            (self.root / old_ckpt).unlink(missing_ok=True)

    def load_checkpoint(self) -> dict[str, Any]:
        """State saved with the last commit (for resuming a killed recording)."""
        name = self.manifest["checkpoint"]
        if name is None:
            raise StoreError(f"{self.root} has no checkpoint; it cannot be resumed (record with a checkpoint).")
        return torch.load(self.root / name, map_location="cpu", weights_only=False)

    # ------------------------------------------------------------------ integrity
    def _expected_sizes(self, entry: dict[str, Any]) -> dict[str, int]:
        spec = self.layers[entry["layer"]]
        item = np.dtype(self.dtype).itemsize
        n = entry["rows"]
        sizes = {"keys": n * spec.d_key * item, "meta": n * len(META_COLUMNS) * 8, "vnorm": n * 4}
        if not self.keys_only:
            sizes["values"] = n * spec.d_value * item
        return sizes

    def _check_sizes(self) -> None:
        for entry in self.manifest["shards"]:
            for kind, size in self._expected_sizes(entry).items():
                path = self.root / "shards" / f"{entry['file']}.{kind}"
                if not path.exists():
                    raise CorruptShardError(f"shard file {path} listed in the manifest is missing; "
                                            "the store is damaged (re-record, or restore the file).")
                actual = path.stat().st_size
                if actual != size:
                    raise CorruptShardError(f"shard file {path} has {actual} bytes, the manifest says {size}: "
                                            "it is truncated or overwritten (re-record this store).")

    def _check_crc(self, path: Path, expected: int) -> None:
        if self.verify_mode == "size" or path in self._checked:
            return
        actual = _crc_file(path)
        if actual != expected:
            raise CorruptShardError(f"checksum mismatch in {path} (crc32 {actual:#010x}, manifest "
                                    f"{expected:#010x}): the shard is corrupt; re-record this store.")
        self._checked.add(path)

    def verify(self) -> None:
        """Check sizes and CRC32 of every shard file; raise :class:`CorruptShardError` on the first bad one."""
        self._check_sizes()
        mode, self.verify_mode = self.verify_mode, "full"
        try:
            for entry in self.manifest["shards"]:
                for kind in self._expected_sizes(entry):
                    self._check_crc(self.root / "shards" / f"{entry['file']}.{kind}", entry["crc"][kind])
        finally:
            self.verify_mode = mode

    def _remove_orphans(self) -> None:
        listed = {e["file"] for e in self.manifest["shards"]}
        for path in (self.root / "shards").iterdir():
            if path.name.split(".")[0] not in listed:
                path.unlink()
        for path in self.root.glob("checkpoint-*.pt*"):
            if path.name != self.manifest["checkpoint"]:
                path.unlink()


def _remove_store_files(root: Path) -> None:
    """Delete the files of a store (only the ones a store writes), keeping anything else."""
    for path in (root / "shards").glob("*") if (root / "shards").exists() else []:
        path.unlink()
    for pattern in ("manifest.json", "manifest.tmp", "w0.pt", "checkpoint-*.pt*"):
        for path in root.glob(pattern):
            path.unlink()


def to_tensor(array: np.ndarray, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Block of a (read-only) memmap as a tensor on ``device``/``dtype`` (copies only if needed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmap: we never write through it
        return torch.from_numpy(np.asarray(array)).to(device, dtype)


def iter_chunks(store: DualStore, layer: str | int, rows: int) -> Iterator[tuple[int, Shard, int, int]]:
    """Yield ``(global_offset, shard, lo, hi)`` blocks of at most ``rows`` slots, in slot order."""
    offset = 0
    for shard in store.shards(layer):
        for lo in range(0, shard.rows, rows):
            hi = min(lo + rows, shard.rows)
            yield offset + lo, shard, lo, hi
        offset += shard.rows
