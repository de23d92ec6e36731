"""`modelserver profile`: write the reference profile of a model on its training data.

    modelserver profile --model M.ubj --data train.csv --label-column y --out profile.json

Exit status 0 with a summary on stdout, or 1 with `modelserver profile: <reason>` on stderr.
"""

import argparse
import sys
import tempfile
from pathlib import Path
from typing import NoReturn, get_args

from pydantic import ValidationError

from modelserver.fatal import StartupError
from modelserver.loading import load_configured_model
from modelserver.model import model_columns
from modelserver.profile import Profile, profile_json
from modelserver.profile_build import DEFAULT_BINS, DEFAULT_TOP_CATEGORIES, build_profile_of_table
from modelserver.profile_data import ProfileError, read_labels, read_table
from modelserver.settings import ModelFormat, Settings
from modelserver.sources import file_sha256

_FORMAT_BY_SUFFIX = {".skops": "sklearn", ".joblib": "sklearn-joblib", ".pkl": "sklearn-joblib"}


def parser() -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(
        prog="modelserver profile",
        description="Write the reference profile (bins and proportions of every feature and"
        " of the outputs, and the quality given labels) of a model on its training data.",
    )
    arguments.add_argument("--model", required=True, help="model artifact: a path or URI")
    arguments.add_argument(
        "--model-format",
        choices=get_args(ModelFormat),
        help="default: sklearn for .skops, sklearn-joblib for .joblib/.pkl, else xgboost",
    )
    arguments.add_argument("--model-sha256", help="hex sha256 the model must have")
    arguments.add_argument(
        "--allow-unsafe-formats",
        action="store_true",
        help="accept sklearn-joblib, whose loading runs code from the file",
    )
    arguments.add_argument(
        "--skops-trusted-types", nargs="*", default=[], help="extra types to trust in skops files"
    )
    arguments.add_argument(
        "--data", required=True, type=Path, help="training data: .csv (header row), .parquet, .npy"
    )
    labels = arguments.add_mutually_exclusive_group()
    labels.add_argument("--label-column", help="the column of --data that holds the labels")
    labels.add_argument(
        "--labels", type=Path, help="labels in a file: 1-D .npy, or text with one per line"
    )
    arguments.add_argument(
        "--categorical",
        nargs="*",
        default=[],
        metavar="COLUMN",
        help="columns to bin by their most frequent values (text columns always are)",
    )
    arguments.add_argument("--bins", type=int, default=DEFAULT_BINS, help="quantile bins")
    arguments.add_argument(
        "--top-categories",
        type=int,
        default=DEFAULT_TOP_CATEGORIES,
        help="categories kept per categorical column; the rest count as `other`",
    )
    arguments.add_argument("--out", required=True, type=Path, help="where to write the JSON")
    return arguments


def main(argv: list[str]) -> NoReturn:
    args = parser().parse_args(argv)
    try:
        profile = _profile(args)
        content = profile_json(profile)
        args.out.write_bytes(content)
    except (ProfileError, StartupError) as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"cannot write {args.out}: {error}")
    print(_summary(profile, args.out))
    sys.exit(0)


def _profile(args: argparse.Namespace) -> Profile:
    model_format = args.model_format or _FORMAT_BY_SUFFIX.get(Path(args.model).suffix, "xgboost")
    with tempfile.TemporaryDirectory(prefix="modelserver-profile-") as downloads:
        try:
            settings = Settings(
                model_uri=args.model,
                model_format=model_format,
                model_sha256=args.model_sha256,
                allow_unsafe_formats=args.allow_unsafe_formats,
                skops_trusted_types=args.skops_trusted_types,
                cache_dir=Path(downloads),
            )
        except ValidationError as error:
            problems = error.errors(include_url=False)
            raise ProfileError("; ".join(str(p["msg"]) for p in problems)) from error
        loaded = load_configured_model(settings)
    columns = model_columns(loaded.model)
    if columns is not None and columns.frame:
        raise ProfileError(
            "the model takes a DataFrame (named columns, the server decodes them into one);"
            " profiles bin rows of numbers and are not supported for it"
        )
    table = read_table(args.data, args.label_column)
    labels = read_labels(args.labels) if args.labels is not None else None
    for column in table.columns:
        if column.texts is not None:
            codes = ", ".join(f"{text}={code}" for code, text in enumerate(column.texts[:5]))
            more = ", ..." if len(column.texts) > 5 else ""
            print(
                f"column {column.name!r} holds text, profiled as the codes the server must"
                f" receive (sorted, as pandas assigns them): {codes}{more}",
                file=sys.stderr,
            )
    return build_profile_of_table(
        loaded.model,
        table,
        labels=labels,
        categorical=args.categorical,
        bins=args.bins,
        top=args.top_categories,
        model_sha256=loaded.sha256,
    )


def _summary(profile: Profile, out: Path) -> str:
    categorical = sum(1 for feature in profile.features if feature.binning.kind == "categories")
    quality = profile.quality
    scores = []
    if quality is not None:
        for name, value in (
            ("accuracy", quality.accuracy),
            ("AUC", quality.auc),
            ("MAE", quality.mae),
        ):
            if value is not None:
                scores.append(f"{name} {value:.4g}")
    return (
        f"profile of {profile.rows} rows, {len(profile.features)} features ({categorical}"
        f" categorical), {profile.model.task} model"
        + (f", reference {', '.join(scores)}" if scores else "")
        + f": {out} (sha256 {file_sha256(out)})"
    )


def _fail(reason: str) -> NoReturn:
    sys.stderr.write(f"modelserver profile: {' '.join(reason.split())}\n")
    sys.exit(1)
