"""``load(path_or_module)``: the one way to get a Graph from a model."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelError
from .graph import Graph


def load(model, input_shape: tuple[int, ...] | None = None, simplify: bool = True) -> Graph:
    """A Graph from an ONNX file path, a ``torch.nn.Module`` or an existing Graph.

    ``input_shape`` (no batch dim) is required for torch modules, whose input shape is not
    recorded in the module; ONNX files carry theirs. A ``.pt``/``.pth`` file is never unpickled
    (unpickling can run code): it is refused with advice (see ``from_torch_file``).
    """
    if isinstance(model, Graph):
        return model
    if isinstance(model, torch.nn.Module):
        from .from_torch import from_torch

        if input_shape is None:
            raise ModelError("loading a torch module needs input_shape (without the batch dim)")
        return from_torch(model, input_shape, simplify=simplify)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelError(f"model file not found: {path}")
        if path.is_dir():
            raise ModelError(f"model path is a directory, not a file: {path}")
        if path.suffix in (".pt", ".pth"):
            from .from_torch import from_torch_file

            return from_torch_file(path)
        from .from_onnx import from_onnx

        return from_onnx(path, simplify=simplify)
    raise ModelError(f"cannot load a model from a {type(model).__name__}")
