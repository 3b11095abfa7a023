"""Append-only, sharded, memory-mapped store of the dual-form memory.

One *slot* is one row that a recorded layer (:mod:`qimia.dual.layers`) saw in one training
step: its key ``x_t`` (layer input row, shape ``(d_key,)``; an embedding stores the token id),
its value ``e_t = dL/dy_t`` (output gradient, shape ``(d_value,)``) and metadata (step,
example, label, task, use, position). Irie, Csordás, Schmidhuber (2022), "The Dual Form of
Neural Networks Revisited".

Layout of a store directory::

    manifest.json            # the commit point: layers, shards (+CRC32), per-step optimizer scalars,
                             # sha256 of w0.pt and of the checkpoint, and its own sha256
    w0.pt                    # W0 and b0 of every recorded layer (the state before step 0)
    checkpoint-<step>.pt     # model/optimizer state after the last committed step (for resume)
    shards/<L>-<n>.keys      # (rows, d_key)   float64|float32|float16 (embeddings: (rows, 1) int64 ids)
    shards/<L>-<n>.values    # (rows, d_value) float64|float32|float16 (absent in keys-only mode)
    shards/<L>-<n>.meta      # (rows, 6)       int64: STEP, EXAMPLE, LABEL, TASK, USE, POS
    shards/<L>-<n>.vnorm     # (rows,)         float32: ||e_t|| computed from the unrounded value

A commit writes and fsyncs the shard files, then the checkpoint, then atomically
replaces the manifest. A process killed at any point (``kill -9``) therefore leaves
every previously committed shard intact; files of the interrupted commit are orphans
that :meth:`DualStore.open` (``resume``) deletes.

Integrity: the manifest carries the sha256 of its own canonical JSON (checked on every open,
so an edited learning rate is refused), ``w0.pt`` and the checkpoint are checked against
their sha256 before every ``torch.load`` (always with ``weights_only=True``: a store file can
never run code), shard truncation is detected from file sizes on open and bit-level
corruption from CRC32 (on first read, or up front with ``verify="full"``, which also checks
``w0.pt`` and the checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qimia.dual.errors import CorruptShardError, StoreError

FORMAT = "qimia.dual.store/2"
META_COLUMNS = ("step", "example", "label", "task", "use", "pos")
STEP, EXAMPLE, LABEL, TASK, USE, POS = range(len(META_COLUMNS))
_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16}
_VERIFY = ("size", "lazy", "full")


@dataclass(frozen=True)
class LayerSpec:
    """A recorded layer: ``y = W x + b`` with the dual matrix ``W`` of shape ``(d_value, d_key)``.

    Attributes:
        name: module name in the model (``model.get_submodule(name)``).
        index: layer number (0 = input layer), the order of recording.
        d_key: key width (input features; patch size of a convolution; vocabulary of an embedding).
        d_value: output width (values ``e_t``).
        weight: parameter name of the weight in ``model.named_parameters()``.
        bias: parameter name of ``b`` or ``None`` (a frozen bias is kept: it stays ``b_0``).
        kind: ``"linear"``, ``"conv"`` or ``"embedding"`` (see :mod:`qimia.dual.layers`).
        weight_shape: shape of the weight parameter (``(d_value, d_key)`` for a Linear).
    """

    name: str
    index: int
    d_key: int
    d_value: int
    weight: str
    bias: str | None
    kind: str = "linear"
    weight_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_shape", tuple(self.weight_shape) or (self.d_value, self.d_key))

    @property
    def key_width(self) -> int:
        """Stored columns per key: 1 (the token id) for an embedding, else ``d_key``."""
        return 1 if self.kind == "embedding" else self.d_key


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
        shapes = {"keys": (self.rows, spec.key_width), "values": (self.rows, spec.d_value),
                  "meta": (self.rows, len(META_COLUMNS)), "vnorm": (self.rows,)}
        dtypes = {"keys": self.store.key_dtype(spec), "values": self.store.dtype, "meta": np.int64,
                  "vnorm": np.float32}
        if kind == "values" and self.store.keys_only:
            raise StoreError("this store was recorded in keys-only mode (approximate): it holds no values e_t.")
        path = self.store.root / "shards" / f"{self.entry['file']}.{kind}"
        self.store._check_crc(path, self.entry["crc"][kind])
        if self.rows == 0:
            return np.zeros(shapes[kind], dtype=dtypes[kind])
        return np.memmap(path, dtype=dtypes[kind], mode="r", shape=shapes[kind])

    @property
    def keys(self) -> np.ndarray:
        """``(rows, d_key)`` keys ``x_t`` (``(rows, 1)`` int64 token ids for an embedding)."""
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


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, without its own ``sha256`` entry."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Atomically replace ``path`` with ``manifest`` sealed by its own sha256 (fsynced before the rename)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump({**manifest, "sha256": _manifest_digest(manifest)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sha256_file(path: Path, block: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _save_verified(obj: Any, path: Path) -> str:
    """``torch.save`` to a temporary file, fsync, rename to ``path``; return the file's sha256."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    digest = _sha256_file(tmp)
    os.replace(tmp, path)
    return digest


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
        self._hashed: set[tuple[Path, str]] = set()
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
        w0_sha = (_save_verified({k: v.detach().cpu().clone() for k, v in w0.items()}, root / "w0.pt")
                  if w0 is not None else None)
        manifest = {"format": FORMAT, "dtype": dtype, "keys_only": bool(keys_only),
                    "layers": {s.name: asdict(s) for s in layers}, "shards": [], "steps": [],
                    "w0_sha256": w0_sha, "checkpoint": None, "checkpoint_sha256": None, "info": dict(info or {})}
        _write_manifest(root / "manifest.json", manifest)
        return cls(root, manifest, "lazy")

    @classmethod
    def open(cls, path: str | os.PathLike, *, verify: str = "lazy", resume: bool = False) -> "DualStore":
        """Open a store. ``verify``: ``"size"`` (file sizes only), ``"lazy"`` (CRC on first read) or ``"full"``.

        The manifest's own sha256 is checked in every mode; ``w0.pt`` and the checkpoint are checked
        before each load, and up front with ``"full"``. With ``resume=True`` orphan files of an
        interrupted commit are deleted.
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
            raise StoreError(f"{mpath} has format {manifest.get('format')!r}, expected {FORMAT!r} (older stores carry "
                             "no checksums of w0.pt, the checkpoints and the manifest, so they cannot be verified); "
                             "re-record the store.")
        if manifest.get("sha256") != _manifest_digest(manifest):
            raise CorruptShardError(f"{mpath} does not match its own sha256: it was edited or is corrupt (an edited "
                                    "learning rate or shard list would silently change every reconstruction); "
                                    "restore the original file or re-record the store.")
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

    def key_dtype(self, spec: LayerSpec) -> type:
        """numpy dtype of ``spec``'s stored keys (int64 token ids for an embedding)."""
        return np.int64 if spec.kind == "embedding" else self.dtype

    def w0(self) -> dict[str, torch.Tensor]:
        """Initial parameters ``{param_name: tensor}`` saved at creation (sha256 checked first)."""
        path = self.root / "w0.pt"
        if not path.exists() or self.manifest["w0_sha256"] is None:
            raise StoreError(f"{path} is missing: the store has no initial weights W0.")
        return self._load_verified(path, self.manifest["w0_sha256"], "the initial weights W0")

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
            if keys.shape != (n, spec.key_width) or meta.shape != (n, len(META_COLUMNS)):
                raise StoreError(f"layer {name}: keys {keys.shape} / meta {meta.shape} do not match "
                                 f"(n, {spec.key_width}) / (n, {len(META_COLUMNS)}).")
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
            crc = {"keys": _write(d / f"{base}.keys", keys.astype(self.key_dtype(spec), copy=False)),
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
            new_manifest["checkpoint_sha256"] = _save_verified(dict(checkpoint), self.root / ckpt_name)
            new_manifest["checkpoint"] = ckpt_name
        new_manifest["shards"] = self.manifest["shards"] + new_entries
        new_manifest["steps"] = self.manifest["steps"] + list(steps)
        _write_manifest(self.root / "manifest.json", new_manifest)
        self.manifest = new_manifest
        self._meta_cache.clear()
        if checkpoint is not None and old_ckpt and old_ckpt != new_manifest["checkpoint"]:
            (self.root / old_ckpt).unlink(missing_ok=True)

    def load_checkpoint(self) -> dict[str, Any]:
        """State saved with the last commit (for resuming a killed recording), sha256 checked first."""
        name = self.manifest["checkpoint"]
        if name is None:
            raise StoreError(f"{self.root} has no checkpoint; it cannot be resumed (record with a checkpoint).")
        return self._load_verified(self.root / name, self.manifest["checkpoint_sha256"], "the resume checkpoint")

    def _check_sha(self, path: Path, expected: str, what: str) -> None:
        if (path, expected) in self._hashed:
            return
        if not path.exists():
            raise CorruptShardError(f"{path} ({what}) listed in the manifest is missing; the store is damaged "
                                    "(restore the file or re-record the store).")
        actual = _sha256_file(path)
        if actual != expected:
            raise CorruptShardError(f"sha256 mismatch in {path} ({what}): the file is corrupt or was edited "
                                    f"(sha256 {actual[:16]}..., manifest {expected[:16]}...); restore the original "
                                    "file or re-record the store.")
        self._hashed.add((path, expected))

    def _load_verified(self, path: Path, expected: str, what: str) -> Any:
        """``torch.load(weights_only=True)`` after checking the file's sha256 against the manifest."""
        self._check_sha(path, expected, what)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise StoreError(f"{path} ({what}) holds objects that torch.load(weights_only=True) refuses ({exc}). "
                             "qimia never loads store files with weights_only=False, because unpickling can run "
                             "arbitrary code; state_objects must save plain tensors, numbers and containers in "
                             "their state_dict.") from exc

    # ------------------------------------------------------------------ integrity
    def _expected_sizes(self, entry: dict[str, Any]) -> dict[str, int]:
        spec = self.layers[entry["layer"]]
        item = np.dtype(self.dtype).itemsize
        n = entry["rows"]
        sizes = {"keys": n * spec.key_width * np.dtype(self.key_dtype(spec)).itemsize,
                 "meta": n * len(META_COLUMNS) * 8, "vnorm": n * 4}
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
        """Check the sha256 of ``w0.pt`` and the checkpoint, then sizes and CRC32 of every shard file.

        Raises :class:`CorruptShardError` on the first bad file.
        """
        if self.manifest["w0_sha256"] is not None:
            self._check_sha(self.root / "w0.pt", self.manifest["w0_sha256"], "the initial weights W0")
        if self.manifest["checkpoint"] is not None:
            self._check_sha(self.root / self.manifest["checkpoint"], self.manifest["checkpoint_sha256"],
                            "the resume checkpoint")
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
    for pattern in ("manifest.json", "manifest.tmp", "w0.pt", "w0.pt.tmp", "checkpoint-*.pt*"):
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
