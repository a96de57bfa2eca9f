"""Certifying a classifier f along a generator's latent segment (GCert's f∘G on a line).

The segment starts at the encoding z = E(x) of an image and ends at ``z + δ·d`` for a learned
mutation direction d; the property is that f classifies G(z + t·δ·d) as ``label`` for every
t ∈ [0, 1]. With ``residual=True`` the images are the generator's *change* added to x itself,
``clamp01(x + G(z + t·δ·d) − G(z))`` (:func:`residual_decoder`): the segment starts at x exactly,
not at its reconstruction G(z), which matters where the generator's decodings are blurred
(CIFAR-10). ``method`` chooses how: "exact" (ExactLine on f∘G: verdict, exact robust fraction,
t*; ReLU networks), "bab" (nncert's complete search on the segment graph, whose one input is t:
attack, bounds, then input splitting on the bound engine; any activation the engine bounds, a
verdict within ``timeout_s`` per segment, no fraction), "quantitative" (sound lower/upper
robust-fraction bounds by splitting, ``config``), or a bound method name (one pass over the
whole segment: VERIFIED or UNKNOWN, FALSIFIED when the midpoint already fails).
"""

from __future__ import annotations

import torch

from ..clock import NEVER, Deadline
from ..errors import ConfigError, ShapeError
from ..models import ops
from ..models.graph import Graph, Node, compose, fresh_name
from ..result import Result, Verdict
from ..specs.output import OutputSpec
from .generative import clamp01_nodes
from .quantitative import QuantConfig, robust_fraction
from .segments import (
    SegmentReport,
    as_float64,
    certify_segments_exact,
    confirm_violation,
    segment_problem,
)


def latent_segment(encoder: Graph, image: torch.Tensor, direction: torch.Tensor, delta: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, z + δ·d) with z = E(image)."""
    if tuple(image.shape) != encoder.input_shape:
        raise ShapeError("image vs generator encoder input", encoder.input_shape,
                         tuple(image.shape))
    with torch.no_grad():
        z = encoder.forward(image.to(encoder.device, encoder.dtype).unsqueeze(0))[0]
    d = torch.as_tensor(direction, dtype=z.dtype, device=z.device).reshape(-1)
    if d.numel() != z.numel():
        raise ShapeError("direction vs latent size", tuple(z.shape), tuple(d.shape))
    return z, z + float(delta) * d


def residual_decoder(decoder: Graph, image: torch.Tensor, z0: torch.Tensor) -> Graph:
    """The graph z ↦ clamp01(image + G(z) − G(z0)) (G = ``decoder``, image of its output
    shape): the generator's change from ``z0`` applied to ``image``. At z = z0 it returns the
    image exactly (when the image lies in [0, 1]). The offset image − G(z0) is a constant of
    the graph, so the graph belongs to this one image; the clamp is two ReLU nodes and a Sub,
    as in the decoder."""
    if tuple(image.shape) != decoder.output_shape:
        raise ShapeError("image vs generator decoder output", decoder.output_shape,
                         tuple(image.shape))
    with torch.no_grad():
        g0 = decoder.forward(z0.to(decoder.device, decoder.dtype).reshape(1, -1))[0]
    offset = image.to(decoder.device, decoder.dtype) - g0
    taken = {decoder.input_name, *(n.name for n in decoder.nodes)}
    names = []
    for base in ("R_moved", "R_shift", "R_hi", "R_lo", "R_image"):
        names.append(fresh_name(base, taken))
        taken.add(names[-1])
    moved, *clamp = names
    out = clamp[-1]
    tail = [Node(moved, ops.ElementwiseAffine(None, offset), (decoder.output_name,)),
            *clamp01_nodes(moved, torch.ones_like(offset), tuple(clamp))]
    return Graph([*decoder.nodes, *tail], decoder.input_shape, decoder.input_name, out)


def certify_latent_segment(classifier: Graph, decoder: Graph, encoder: Graph, image: torch.Tensor,
                           label: int, direction: torch.Tensor, delta: float = 1.0,
                           method: str = "exact", config: QuantConfig | None = None,
                           deadline: Deadline = NEVER, residual: bool = False) -> SegmentReport:
    """Robustness of ``classifier`` at ``label`` on ``decoder``'s images along the segment
    (see the module docstring; ``residual``: the decoded change added to ``image``)."""
    z0, z1 = latent_segment(encoder, image, direction, delta)
    g = decoder.to(dtype=torch.float64)
    if residual:
        g = residual_decoder(g, image.reshape(g.output_shape), z0)
    fg = compose(g, classifier.to(dtype=torch.float64))
    return certify_line(fg, z0, z1, label, method, config, deadline)


def certify_line(graph: Graph, start: torch.Tensor, end: torch.Tensor, label: int,
                 method: str = "exact", config: QuantConfig | None = None,
                 deadline: Deadline = NEVER, timeout_s: float = 30.0) -> SegmentReport:
    """Robustness of ``graph`` at ``label`` on the segment start → end of its input space (two
    images, or two latent points of f∘G), in float64; ``method`` as in the module docstring."""
    return certify_lines(graph, start.unsqueeze(0), end.unsqueeze(0), [label], method, config,
                         deadline, timeout_s=timeout_s)[0]


def search_segment(graph: Graph, start: torch.Tensor, end: torch.Tensor, spec: OutputSpec,
                   timeout_s: float = 30.0, deadline: Deadline = NEVER) -> SegmentReport:
    """``spec`` (batch 1) decided on the whole segment by :func:`nncert.complete.verify` on
    the segment graph (input t ∈ [0, 1]). VERIFIED: robust fraction 1; FALSIFIED: t* and its
    image, re-run on ``graph``; otherwise UNKNOWN or TIMEOUT with fraction bounds [0, 1]."""
    from ..complete.verify import VerifyConfig, verify

    res = verify(segment_problem(graph, start, end, spec), VerifyConfig(timeout_s=timeout_s),
                 deadline=deadline)
    stats = {**res.stats, "method": res.method}
    if res.verdict is Verdict.VERIFIED:
        whole = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
        return SegmentReport(Result(Verdict.VERIFIED, "bab", res.time_s, stats=stats), 1.0, 1.0,
                             proved=whole, stats=stats)
    if res.verdict is Verdict.FALSIFIED:
        t = float(res.counterexample.x.reshape(-1)[0])
        found = confirm_violation(graph, start, end, spec, [t])
        if found is not None:
            return SegmentReport(Result(Verdict.FALSIFIED, "bab", res.time_s,
                                        counterexample=found[1], stats=stats),
                                 0.0, 1.0, t_star=t, stats=stats)
    verdict = Verdict.TIMEOUT if res.verdict is Verdict.TIMEOUT else Verdict.UNKNOWN
    return SegmentReport(Result(verdict, "bab", res.time_s, stats=stats), 0.0, 1.0, stats=stats)


def certify_lines(graph: Graph, starts: torch.Tensor, ends: torch.Tensor, labels,
                  method: str = "exact", config: QuantConfig | None = None,
                  deadline: Deadline = NEVER, chunk: int = 64,
                  timeout_s: float = 30.0) -> list[SegmentReport]:
    """:func:`certify_line` for each segment starts[s] → ends[s] (S, *input_shape) at
    labels[s]; "exact" runs batched ExactLine, ``chunk`` segments per pass, the other methods
    one segment at a time ("bab": at most ``timeout_s`` seconds each)."""
    g = as_float64(graph)
    labels = [int(v) for v in torch.as_tensor(labels).reshape(-1).tolist()]
    if any(not 0 <= v < g.num_outputs for v in labels):
        bad = next(v for v in labels if not 0 <= v < g.num_outputs)
        raise ConfigError(f"label {bad} outside the model's {g.num_outputs} classes")
    if len(labels) != starts.shape[0] or ends.shape[0] != starts.shape[0]:
        raise ShapeError("segment starts, ends and labels", (starts.shape[0],),
                         (ends.shape[0], len(labels)))
    a, b = starts.to(g.device, torch.float64), ends.to(g.device, torch.float64)
    spec = OutputSpec.robustness(labels, g.num_outputs, dtype=torch.float64, device=g.device)
    if method == "exact":
        return certify_segments_exact(g, a, b, spec, chunk=chunk)
    if method == "bab":
        return [search_segment(g, a[s], b[s], spec[s], timeout_s, deadline)
                for s in range(len(labels))]
    cfg = config or QuantConfig()
    if method != "quantitative":
        cfg = QuantConfig(method=method, initial_pieces=1, max_pieces=1)
    return [robust_fraction(g, a[s], b[s], spec[s], cfg, deadline) for s in range(len(labels))]
