"""Rows of the data sets that the sample models were trained on."""

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris


def breast_cancer_rows(count: int) -> npt.NDArray[np.float64]:
    features: npt.NDArray[np.float64] = load_breast_cancer().data[:count]
    return features


def diabetes_rows(count: int) -> npt.NDArray[np.float64]:
    features: npt.NDArray[np.float64] = load_diabetes().data[:count]
    return features


def iris_rows(count: int) -> npt.NDArray[np.float64]:
    features: npt.NDArray[np.float64] = load_iris().data[:count]
    return features


def diabetes_table(count: int) -> pd.DataFrame:
    """Rows of the table that the categorical sample models were fitted on
    (examples/train_models.py): the diabetes data with `sex` as text."""
    table: pd.DataFrame = load_diabetes(as_frame=True).data.head(count).copy()
    table["sex"] = pd.Series(np.where(table["sex"] > 0, "male", "female"), dtype=object)
    return table
