"""A CPU-side proxy for ``torch.cuda.set_sync_debug_mode("error")``: make a training step raise on every
operation that would stall the host on a GPU.

On CUDA a training step should only queue kernels: the host runs ahead and the GPU never idles. Anything
that needs a value or a shape only the device knows makes the host wait for the whole queue (a host-device
synchronisation), and a copy of host memory to the device made without ``non_blocking`` waits too. CPU tests
cannot see either, so :class:`HostSyncGuard` raises on what would do so:

- reading a value: ``.item()``, ``int()``, ``float()``, ``bool()`` (``if t:``), ``.tolist()``,
  ``torch.equal`` (``aten._local_scalar_dense``, ``aten.equal``);
- data-dependent shapes: boolean-mask indexing ``x[mask]`` and ``x[mask] = ...`` through ``index_put``,
  ``nonzero``/``argwhere``, ``masked_select``, ``bincount``, ``unique`` (all variants), ``repeat_interleave``
  with tensor repeats and no ``output_size``;
- host data copied to the device: ``torch.tensor(data, device=...)``, ``torch.as_tensor(data, device=...)``
  and ``t.new_tensor(data)`` of Python data, and a tensor *made in the step on the host* (a factory such as
  ``torch.randperm`` or ``torch.arange`` called without ``device=``, and whatever is computed from host
  tensors only) that is moved by ``.to()`` / ``.cuda()`` / ``copy_`` from ssl_lightning code (or its tests), or mixed
  (with more than one element, e.g. as an index) into an operation on device tensors.

Everything that was not made in the step on the host (the batch, parameters, buffers, and what is computed
from them) counts as a device tensor, so the proxy works on CPU where every tensor is a CPU tensor. The
``.to()`` check looks at ssl_lightning's own calls only: on CPU a move "to the device" and a move "to the
host" look the same (Lightning moves its logging state to the logged value's device, which is the host for
a host value), so library internals are judged by the other rules only.

``allow`` names code whose syncs are known and owned elsewhere: ``"path/file.py"`` (any function of the
file) or ``"path/file.py:function"``, matched against the Python call stack of the offending operation.

Use::

    with HostSyncGuard():
        out = model.training_step(batch, 0)
        out["loss"].backward()
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# aten operators whose result needs a device value on the host (a sync on CUDA), by what they do
_SYNCING_OPS = {
    aten._local_scalar_dense.default: ".item() / int() / float() / bool() of a tensor (reads a device value)",
    aten.equal.default: "torch.equal (returns a Python bool)",
    aten.nonzero.default: "nonzero (data-dependent shape)",
    aten.argwhere.default: "argwhere (data-dependent shape)",
    aten.masked_select.default: "masked_select (data-dependent shape)",
    aten.bincount.default: "bincount (its length depends on the data)",
    aten._unique.default: "unique (data-dependent shape)",
    aten._unique2.default: "unique (data-dependent shape)",
    aten.unique_dim.default: "unique (data-dependent shape)",
    aten.unique_consecutive.default: "unique_consecutive (data-dependent shape)",
}
_BOOL_INDEX_OPS = {aten.index.Tensor: "boolean-mask indexing x[mask] (data-dependent shape)",
                   aten.index_put.default: "x[mask] = ... with a boolean mask (nonzero inside)",
                   aten.index_put_.default: "x[mask] = ... with a boolean mask (nonzero inside)",
                   aten._index_put_impl_.default: "x[mask] = ... with a boolean mask (nonzero inside)"}

# factories that make a host tensor unless given a device
_FACTORIES = {torch.arange, torch.randperm, torch.rand, torch.randn, torch.randint, torch.zeros, torch.ones,
              torch.empty, torch.full, torch.linspace, torch.eye, torch.tensor, torch.as_tensor}
_FROM_DATA = {torch.tensor, torch.as_tensor}
_MOVES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_}
_PACKAGE = str(Path(__file__).resolve().parent)


class HostSyncError(AssertionError):
    """An operation that would synchronise the host with the device ran inside a guarded step."""


def _tensors(obj) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _caller() -> str:
    """The innermost ssl_lightning (or test) frame outside this file: where the offending call is."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if name != __file__ and (name.startswith(_PACKAGE) or "/tests/" in name):
            return f"{name}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return "outside ssl_lightning"


def _called_from_package() -> bool:
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE) or "/tests/" in frame.f_code.co_filename)


class HostSyncGuard:
    """Context manager raising :class:`HostSyncError` on host-device syncs (see the module docstring)."""

    def __init__(self, allow: Iterable[str] = ()):
        self.allow = [tuple(a.split(":", 1)) if ":" in a else (a, None) for a in allow]
        self.allowed: list[str] = []  # what the allow-list let through (tests check that it is still needed)
        self._modes = (_FunctionMode(self), _DispatchMode(self))

    def __enter__(self) -> HostSyncGuard:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    def refuse(self, what: str) -> None:
        frame = sys._getframe(1)
        while frame is not None:
            for path, function in self.allow:
                if frame.f_code.co_filename.endswith(path) and function in (None, frame.f_code.co_name):
                    self.allowed.append(f"{what} ({path}{':' + function if function else ''})")
                    return
            frame = frame.f_back
        raise HostSyncError(f"host-device synchronisation in the training step: {what}, at {_caller()}")

    def is_host(self, t: torch.Tensor) -> bool:
        return getattr(t, "_made_on_host_by", None) is self

    def mark_host(self, t: torch.Tensor) -> None:
        t._made_on_host_by = self  # an attribute, not a set: tensors compare element-wise


class _FunctionMode(TorchFunctionMode):
    """Python-level calls: Python data or host-made tensors reaching the device, ``tolist``."""

    def __init__(self, guard: HostSyncGuard):
        super().__init__()
        self.guard = guard

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        guard = self.guard
        if func is torch.Tensor.tolist:
            guard.refuse(".tolist() (reads device values)")
        elif func in _FROM_DATA and kwargs.get("device") is not None and not any(_tensors(args[:1])):
            guard.refuse(f"torch.{func.__name__}(Python data, device=...) (a blocking host-to-device copy)")
        elif func is torch.Tensor.new_tensor and not guard.is_host(args[0]) and not any(_tensors(args[1:2])):
            guard.refuse("new_tensor(Python data) on a device tensor (a blocking host-to-device copy)")
        elif func in _MOVES and _called_from_package():
            source = args[1] if func is torch.Tensor.copy_ else args[0]
            if guard.is_host(source) and not (func is torch.Tensor.to and _dtype_only(args[1:], kwargs)):
                guard.refuse(f"{func.__name__}() of a tensor made on the host in the step (a host-to-device copy)")
        inputs = list(_tensors((args, kwargs)))
        if func not in _MOVES and any(guard.is_host(t) and t.numel() > 1 for t in inputs) and not all(map(guard.is_host, inputs)):
            guard.refuse(f"{getattr(func, '__name__', func)} mixes a tensor made on the host in the step with device tensors")
        out = func(*args, **kwargs)
        made_on_host = (func in _FACTORIES and kwargs.get("device") is None) or (
            inputs and all(map(guard.is_host, inputs)) and not (func is torch.Tensor.to and not _dtype_only(args[1:], kwargs)))
        if made_on_host:
            for t in _tensors(out):
                guard.mark_host(t)
        return out


def _dtype_only(args, kwargs) -> bool:
    """Whether ``Tensor.to(*args, **kwargs)`` changes only the dtype (no device, no other tensor)."""
    return kwargs.get("device") is None and all(isinstance(a, (torch.dtype, bool)) or a is None for a in args)


class _DispatchMode(TorchDispatchMode):
    """aten-level operators: value reads and data-dependent shapes, wherever they are called from."""

    def __init__(self, guard: HostSyncGuard):
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SYNCING_OPS:
            self.guard.refuse(_SYNCING_OPS[func])
        elif func in _BOOL_INDEX_OPS and any(t.dtype in (torch.bool, torch.uint8) for t in _tensors(args[1])):
            self.guard.refuse(_BOOL_INDEX_OPS[func])
        elif func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            self.guard.refuse("repeat_interleave with tensor repeats and no output_size (data-dependent shape)")
        return func(*args, **kwargs)


__all__ = ["HostSyncError", "HostSyncGuard"]
