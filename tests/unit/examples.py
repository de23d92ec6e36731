"""The example manifests and, for the invalid ones, the rule each breaks."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


@dataclass(frozen=True)
class InvalidExample:
    path: Path
    expected_message: str
    field: str

    @property
    def manifest(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.path.read_text())
        return loaded


def valid_example_paths() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.yaml"))


def invalid_examples() -> list[InvalidExample]:
    examples = []
    for path in sorted((EXAMPLES_DIR / "invalid").glob("*.yaml")):
        header = dict(
            line.removeprefix("# ").split(": ", 1) for line in path.read_text().splitlines()[:2]
        )
        examples.append(InvalidExample(path, header["expect"], header["field"]))
    return examples
