"""Rows of the data sets that the sample models were trained on."""

import numpy as np
import numpy.typing as npt
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
