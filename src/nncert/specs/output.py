"""Output specifications: what must hold of the network's output ``y``.

A property is a **conjunction of clauses**, each clause a **disjunction of rows**
``C[i]·y + d[i] > 0``. This is the negation of VNN-LIB's violation region (a disjunction of
conjunctions of ``a·y ≤ b``), so every VNN-LIB property maps here without expansion.
Robustness at a label is K−1 one-row clauses ``y_label − y_j > 0``.

All tensors are batched: C is (B, R, n_out), d is (B, R); the clause structure (which rows form
each clause) is shared by the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ShapeError, SpecError


@dataclass(frozen=True, eq=False)
class OutputSpec:
    """``AND_k OR_{i ∈ clauses[k]} (C[:, i]·y + d[:, i] > 0)``."""

    C: torch.Tensor
    d: torch.Tensor
    clauses: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if self.C.dim() != 3 or self.d.shape != self.C.shape[:2]:
            raise ShapeError("spec C (B, R, n_out) vs d (B, R)", tuple(self.C.shape[:2]),
                             tuple(self.d.shape))
        rows = sorted(i for cl in self.clauses for i in cl)
        if rows != list(range(self.C.shape[1])) or any(len(cl) == 0 for cl in self.clauses):
            raise SpecError("each spec row must belong to exactly one non-empty clause")

    # -- shape -----------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.C.shape[0]

    @property
    def num_rows(self) -> int:
        return self.C.shape[1]

    @property
    def num_outputs(self) -> int:
        return self.C.shape[2]

    def __getitem__(self, idx) -> OutputSpec:
        C, d = self.C[idx], self.d[idx]
        if C.dim() == 2:
            C, d = C.unsqueeze(0), d.unsqueeze(0)
        return OutputSpec(C, d, self.clauses)

    def expand(self, batch: int) -> OutputSpec:
        """The same spec repeated for ``batch`` elements (from a batch of 1)."""
        return OutputSpec(self.C.expand(batch, -1, -1), self.d.expand(batch, -1), self.clauses)

    def repeat(self, times: int) -> OutputSpec:
        """Each batch element's spec repeated ``times`` (for ``Box.split``-style batching)."""
        return OutputSpec(self.C.repeat(times, 1, 1), self.d.repeat(times, 1), self.clauses)

    def to(self, device=None, dtype=None) -> OutputSpec:
        return OutputSpec(self.C.to(device=device, dtype=dtype),
                          self.d.to(device=device, dtype=dtype), self.clauses)

    # -- evaluation ------------------------------------------------------------------------
    def values(self, y: torch.Tensor) -> torch.Tensor:
        """Row values ``C·y + d``: y (…, B, n_out) → (…, B, R)."""
        y = y.reshape(*y.shape[: y.dim() - 1], -1) if y.dim() >= 2 else y
        return torch.einsum("brn,...bn->...br", self.C.to(y.dtype), y) + self.d.to(y.dtype)

    def clause_max(self, row_values: torch.Tensor) -> torch.Tensor:
        """Per clause, the max over its rows: (…, R) → (…, K)."""
        return torch.stack([row_values[..., list(cl)].amax(dim=-1) for cl in self.clauses], -1)

    def margin(self, y: torch.Tensor) -> torch.Tensor:
        """``min_k max_{i∈k} (C_i·y + d_i)``: the property holds at y iff this is > 0."""
        return self.clause_max(self.values(y)).amin(dim=-1)

    def holds(self, y: torch.Tensor) -> torch.Tensor:
        return self.margin(y) > 0

    def proved(self, lower: torch.Tensor) -> torch.Tensor:
        """Given sound lower bounds of the rows over the input set, (B, R): whether the
        property is proved for each batch element (every clause has a row with lower > 0)."""
        return self.clause_max(lower).amin(dim=-1) > 0

    def disproved(self, upper: torch.Tensor) -> torch.Tensor:
        """Given sound upper bounds of the rows, whether the property fails *everywhere* on the
        set (some clause has every row ≤ 0 at every point) — a certain violation."""
        return self.clause_max(upper).amin(dim=-1) <= 0

    # -- constructors ----------------------------------------------------------------------
    @staticmethod
    def robustness(labels, num_classes: int, dtype=None, device=None) -> OutputSpec:
        """``y_label − y_j > 0`` for every j ≠ label, one single-row clause each."""
        labels = torch.as_tensor(labels, device=device).reshape(-1).long()
        if bool(((labels < 0) | (labels >= num_classes)).any()):
            raise SpecError(f"labels must lie in [0, {num_classes}), got {labels.tolist()}")
        B, K = labels.numel(), num_classes
        eye = torch.eye(K, dtype=dtype or torch.get_default_dtype(), device=device)
        C = eye[labels].unsqueeze(1) - eye.unsqueeze(0)  # (B, K, K): row j = e_label - e_j
        keep = torch.ones(B, K, dtype=torch.bool, device=device)
        keep[torch.arange(B, device=device), labels] = False
        C = C[keep].reshape(B, K - 1, K)
        d = torch.zeros(B, K - 1, dtype=C.dtype, device=device)
        return OutputSpec(C, d, tuple((i,) for i in range(K - 1)))

    @staticmethod
    def conjunction(C: torch.Tensor, d: torch.Tensor | None = None) -> OutputSpec:
        """Every row must be positive: one single-row clause per row. C (B, R, n) or (R, n)."""
        if C.dim() == 2:
            C = C.unsqueeze(0)
        if d is None:
            d = C.new_zeros(C.shape[:2])
        elif d.dim() == 1:
            d = d.unsqueeze(0).expand(C.shape[0], -1)
        return OutputSpec(C, d, tuple((i,) for i in range(C.shape[1])))

    @staticmethod
    def identity(num_outputs: int, batch: int = 1, dtype=None, device=None) -> OutputSpec:
        """Rows ``y_i`` themselves (for bounding the outputs; 'holds' means all y_i > 0)."""
        eye = torch.eye(num_outputs, dtype=dtype or torch.get_default_dtype(), device=device)
        return OutputSpec.conjunction(eye.unsqueeze(0).expand(batch, -1, -1).contiguous())
