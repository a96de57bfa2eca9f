"""Run an ONNX file under onnxruntime on a batch-first tensor (the reference semantics).

The falsifier re-checks every counterexample here, on the file itself rather than on the loaded
Graph. Inputs follow the Graph convention of :func:`~nncert.models.from_onnx.from_onnx`: ``x`` has
shape (N, *input_shape), where ``input_shape`` is the ONNX input shape without its leading batch
dim (1 or symbolic) — or the whole ONNX shape when it has none.
"""

from __future__ import annotations

import functools
import gzip
import math

import numpy as np
import torch

from ..errors import ModelError, ShapeError
from ..utils import one_line


@functools.lru_cache(maxsize=8)
def _session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    source: str | bytes = path
    with open(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":  # a gzip-compressed model (net.onnx.gz)
            f.seek(0)
            source = gzip.decompress(f.read())
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"onnxruntime cannot load {path}: {one_line(e, 200)}") from e


def _drop_batch(y: np.ndarray) -> np.ndarray:
    """One sample's output without its leading batch dim of 1 (kept for 1-D outputs)."""
    return y[0] if y.ndim > 1 and y.shape[0] == 1 else y


def run_onnx(path, x: torch.Tensor) -> torch.Tensor:
    """The ONNX model's output on each row of ``x``, shape (N, *output_shape), on ``x``'s device."""
    sess = _session(str(path))
    inp = sess.get_inputs()[0]
    dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    dims = list(inp.shape)
    symbolic_batch = len(dims) >= 2 and not isinstance(dims[0], int)
    fixed = [d if isinstance(d, int) and d > 0 else 1 for d in dims]
    xs = x.detach().cpu().numpy().astype(dtype)
    n = xs.shape[0]
    if math.prod(xs.shape[1:]) != math.prod(fixed[1:] if len(dims) >= 2 and fixed[0] == 1 else fixed):
        raise ShapeError(f"input of {path}", tuple(fixed), tuple(xs.shape[1:]))
    if symbolic_batch and n > 0:
        try:
            (y,) = sess.run([sess.get_outputs()[0].name], {inp.name: xs.reshape(n, *fixed[1:])})
            if y.shape[0] == n:
                return torch.from_numpy(np.ascontiguousarray(y)).to(x.device)
        except Exception:  # a symbolic batch the graph does not really honour: one at a time
            pass
    outs = []
    for i in range(n):
        (y,) = sess.run([sess.get_outputs()[0].name], {inp.name: xs[i].reshape(fixed)})
        outs.append(_drop_batch(y))
    return torch.from_numpy(np.stack(outs)).to(x.device)
