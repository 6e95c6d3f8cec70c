"""Task-vector conflict analysis: which layers and modules the fine-tunes fight over.

Definitions (every figure is computed per tensor, then aggregated):

- Task vector of model t: ``tau_t = theta_t - theta_base``, computed in float32 (LoRA
  adapters: ``B @ A * scale``; tensors an adapter does not target are 0).
- Trimming (optional, ``density``), as in TIES: keep the ``k = max(1, int(density * n))``
  entries of largest ``|tau_t|``, per tensor (``trim_scope="tensor"``, as mergekit) or over
  the whole model (``"global"``, n = all coordinates of all analysed tensors); the rest
  become 0. Ties at the cut: kept in analysis order (flat row-major index; tensors in the
  order analysed) until k are kept, i.e. a stable descending sort. The global cut is
  exact (two streaming radix-selection passes over the float32 bits, see ``_trim``).
  Every figure below uses the trimmed tau except ``l2_untrimmed`` and ``unchanged_fraction``.
- Active set at coordinate p: ``A_p = {t : tau_t,p != 0}``. p is a *conflict coordinate*
  when ``A_p`` holds a positive and a negative value.
- ``conflict_fraction_active`` = conflict coords / coords with ``|A_p| >= 2``
  (``multi_active_coords``); ``conflict_fraction_all`` = conflict coords / all coords.
- ``cl2`` of model t (conflict-limited L2 norm): ``||tau_t restricted to conflict coords||_2``;
  ``cl2_ratio = cl2 / l2``.
- ``ties_discarded_l2`` of t: ``||tau_t restricted to coords where sign(tau_t,p) opposes the
  elected sign||_2``, elected sign = sign(sum_t tau_t,p), a zero sum electing + (mergekit's
  rule); ``ties_discarded_ratio = ties_discarded_l2 / l2``.
- ``l2`` = ``||tau_t||_2``; ``cosine``/``abs_cosine`` between every pair;
  ``unchanged_fraction``: coordinates with ``theta_t == theta_base`` exactly (untrimmed);
  ``nonzero_fraction``: coordinates with trimmed ``tau_t != 0``.
- Aggregation (per layer, per module type, per layer x module, whole model): L2-type
  figures by the square root of the summed squares, fractions by summed counts, cosines
  from summed dot products and norms (the cosine of the concatenated vectors).

Models (``analyze_pool``): the conflict figures over all sources jointly, and for every
pair ``a|b`` the same figures over those two only. Candidates (``analyze_candidates``):
pairs ``candidate|source`` only. Ratios with a zero denominator are None.

Typical use::

    report = analyze_pool(ModelPool.open(base, [ft_a, ft_b]), density=0.2, trim_scope="global")
    write_conflict_outputs(report, "out/")   # conflicts.csv, summary.json, heatmap_*.png
    print(format_top_layers(report))
"""

from evomerge.analysis._conflicts import (
    TRIM_SCOPES,
    TaskVectorFn,
    TensorInfoLike,
    analyze_candidates,
    analyze_conflicts,
    analyze_pool,
)
from evomerge.analysis._figures import pair_key
from evomerge.analysis._outputs import format_top_layers, run_conflicts, write_conflict_outputs
from evomerge.analysis._report import MODULE_ORDER, ConflictReport, TensorRow
from evomerge.analysis._trim import Threshold

__all__ = [
    "MODULE_ORDER",
    "TRIM_SCOPES",
    "ConflictReport",
    "TaskVectorFn",
    "TensorInfoLike",
    "TensorRow",
    "Threshold",
    "analyze_candidates",
    "analyze_conflicts",
    "analyze_pool",
    "format_top_layers",
    "pair_key",
    "run_conflicts",
    "write_conflict_outputs",
]
