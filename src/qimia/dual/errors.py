"""Errors raised by :mod:`qimia.dual`; each message names the problem and the fix."""

from __future__ import annotations


class DualFormError(RuntimeError):
    """Base class: something makes the dual form unavailable or unsafe."""


class UnsupportedOptimizerError(DualFormError, TypeError):
    """The optimizer has no exact key-value (dual) form, e.g. Adam."""


class StoreError(DualFormError):
    """The on-disk memory is missing, inconsistent or used wrongly."""


class CorruptShardError(StoreError):
    """A shard file is truncated or its checksum does not match the manifest."""


class VerificationError(StoreError):
    """A store failed :func:`qimia.dual.verify.verify_store`: a checksum or a reconstruction above tolerance."""


class UnrecordedLayerWarning(UserWarning):
    """Trainable layers of the model that the recorder does not record (listed by name with the reason)."""
