"""The named columns of a scikit-learn estimator fitted on a DataFrame, as far as the
fitted estimator tells them.

scikit-learn records the column names (`feature_names_in_`) but not their dtypes. What a
column holds is read from what consumes it in a ColumnTransformer (the estimator itself,
or the first step of a Pipeline): an encoder fitted on strings (OneHotEncoder,
OrdinalEncoder: `categories_` of strings) or a text vectorizer takes strings, an encoder
fitted on numbers or any other transformer takes numbers, a column passed through or
dropped is not known (it takes either). An encoder that refuses unknown values
(`handle_unknown="error"`) also gives the only values the column may hold. Without a
ColumnTransformer every column is a number and the estimator takes them as an array.
"""

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from modelserver.model import Column, ColumnKind, ModelColumns

# Transformers whose columns may hold anything: they run the user's own code.
_OPAQUE_TRANSFORMERS = ("FunctionTransformer",)


def sklearn_columns(estimator: Any) -> ModelColumns | None:
    names_in = getattr(estimator, "feature_names_in_", None)
    if names_in is None:
        return None
    names = [str(name) for name in names_in]
    selector = _column_transformer(estimator)
    if selector is None:
        return ModelColumns(tuple(Column(name, ColumnKind.NUMBER) for name in names), frame=False)
    columns = {name: Column(name, ColumnKind.ANY) for name in names}
    for _, fitted, selected in selector.transformers_:
        if isinstance(fitted, str):  # "drop" or "passthrough"
            continue
        for position, name in enumerate(_selected_names(selected, names)):
            columns[name] = _column(name, fitted, position)
    return ModelColumns(tuple(columns[name] for name in names), frame=True)


def _column_transformer(estimator: Any) -> ColumnTransformer | None:
    while isinstance(estimator, Pipeline):
        estimator = estimator.steps[0][1]
    return estimator if isinstance(estimator, ColumnTransformer) else None


def _selected_names(selected: Any, names: list[str]) -> list[str]:
    """The names of the columns a fitted ColumnTransformer gave one transformer: names,
    positions, a slice or a boolean mask."""
    if isinstance(selected, str | int | np.integer):
        selected = [selected]
    if isinstance(selected, slice):
        if isinstance(selected.start, str) or isinstance(selected.stop, str):
            start = names.index(selected.start) if selected.start is not None else None
            stop = names.index(selected.stop) + 1 if selected.stop is not None else None
            return names[start:stop]
        return names[selected]
    picked = np.asarray(selected)
    if picked.dtype == bool:
        return [name for name, chosen in zip(names, picked, strict=True) if chosen]
    return [
        names[int(item)] if isinstance(item, int | np.integer) else str(item) for item in selected
    ]


def _column(name: str, fitted: Any, position: int) -> Column:
    """What the column at `position` of a transformer's columns holds."""
    encoder = _encoder(fitted)
    if encoder is not None:
        categories = np.asarray(encoder.categories_[position])
        known: tuple[Any, ...]
        if categories.dtype.kind in "OUS":
            kind = ColumnKind.STRING
            known = tuple(value for value in categories.tolist() if isinstance(value, str))
        else:
            kind = ColumnKind.NUMBER
            known = tuple(float(value) for value in categories.tolist())
        refuses_unknown = getattr(encoder, "handle_unknown", None) == "error"
        return Column(name, kind, known if refuses_unknown else None)
    if hasattr(_first_step(fitted), "vocabulary_"):
        return Column(name, ColumnKind.STRING)  # text: CountVectorizer, TfidfVectorizer
    if type(_first_step(fitted)).__name__ in _OPAQUE_TRANSFORMERS:
        return Column(name, ColumnKind.ANY)
    return Column(name, ColumnKind.NUMBER)


def _first_step(fitted: Any) -> Any:
    while isinstance(fitted, Pipeline):
        fitted = fitted.steps[0][1]
    return fitted


def _encoder(fitted: Any) -> Any:
    """The categorical encoder of a transformer (itself, or a step of its pipeline)."""
    steps = [step for _, step in fitted.steps] if isinstance(fitted, Pipeline) else [fitted]
    for step in steps:
        if hasattr(step, "categories_"):
            return step
    return None
