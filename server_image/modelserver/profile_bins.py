"""How values fall into the bins of a reference profile: one definition for the profile
builder (training proportions) and the server (live counts), so both count alike.

Quantile bins: `edges` are k-1 ascending inner edges of k bins; bin i holds the values v
with edges[i-1] <= v < edges[i] (the first bin is open below, the last open above, so
infinities land in them). Category bins: one bin per listed category value, then `other`
for any value not listed. Both kinds end with a `missing` bin for NaN.
"""

import numpy as np
import numpy.typing as npt

Indices = npt.NDArray[np.intp]

OTHER_BIN = "other"
MISSING_BIN = "missing"


def quantile_edges(values: npt.NDArray[np.float64], bins: int) -> list[float]:
    """Inner edges that cut the finite values into `bins` bins of about equal counts.

    Edges are values of the data (no interpolation), so a value the model receives
    compares with them exactly; repeated values merge bins, so there may be fewer.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0 or bins < 2:
        return []
    cuts = np.arange(1, bins) / bins
    edges = np.unique(np.quantile(finite, cuts, method="higher"))
    # An edge at the minimum would leave the first bin empty.
    return [float(edge) for edge in edges if edge > finite.min()]


def quantile_bin_index(edges: npt.NDArray[np.float64], values: npt.NDArray[np.floating]) -> Indices:
    """Bin of each value: 0 .. len(edges) by value, len(edges) + 1 for NaN (missing)."""
    index = np.searchsorted(edges, values, side="right")
    return np.where(np.isnan(values), len(edges) + 1, index)


def quantile_bin_names(edges: list[float]) -> list[str]:
    return [*(str(i) for i in range(len(edges) + 1)), MISSING_BIN]


def top_categories(values: npt.NDArray[np.float64], count: int) -> list[float]:
    """The `count` most frequent values (NaN is not a category), the most frequent first;
    ties go to the smaller value so that the choice is reproducible."""
    present = values[~np.isnan(values)]
    categories, counts = np.unique(present, return_counts=True)
    order = np.lexsort((categories, -counts))[:count]
    return [float(categories[i]) for i in order]


def category_bin_index(
    categories: npt.NDArray[np.float64], values: npt.NDArray[np.floating]
) -> Indices:
    """Bin of each value: its category's position, len(categories) for any other value,
    len(categories) + 1 for NaN (missing)."""
    other = len(categories)
    if other == 0:
        return np.where(np.isnan(values), other + 1, other)
    order = np.argsort(categories)
    ordered = categories[order]
    found = np.minimum(np.searchsorted(ordered, values), other - 1)
    index = np.where(ordered[found] == values, order[found], other)
    return np.where(np.isnan(values), other + 1, index)


def category_bin_names(categories: int) -> list[str]:
    return [*(str(i) for i in range(categories)), OTHER_BIN, MISSING_BIN]


def proportions(index: Indices, bins: int) -> list[float]:
    """Share of the values in each of `bins` bins (all zero when there are no values)."""
    counts = np.bincount(index, minlength=bins)
    total = counts.sum()
    if total == 0:
        return [0.0] * bins
    return [float(count) for count in counts / total]


def class_bin_index(
    classes: npt.NDArray[np.generic], predicted: npt.NDArray[np.generic]
) -> Indices:
    """Bin of each predicted label: its position in `classes`, len(classes) for another."""
    order = np.argsort(classes)
    ordered = classes[order]
    found = np.minimum(np.searchsorted(ordered, predicted), len(classes) - 1)
    return np.where(ordered[found] == predicted, order[found], len(classes))
