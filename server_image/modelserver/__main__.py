"""The `modelserver` command: parse the configuration, load the model, serve.

`modelserver validate ...` runs the offline champion-challenger check instead
(modelserver.validate, docs/validation.md); `modelserver profile ...` writes a model's
reference profile (modelserver.profile_cli, docs/server.md).
"""

import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import CliApp, SettingsError

from modelserver.fatal import StartupError, exit_with_reason
from modelserver.settings import Settings, ignored_variables

_DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
# Thread pools that OpenMP and BLAS size when first imported; busy-waiting threads of
# an oversized pool eat the cores that the HTTP server needs.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def main() -> None:
    if sys.argv[1:2] == ["validate"]:
        from modelserver.validate import main as validate

        validate(sys.argv[2:])
    if sys.argv[1:2] == ["profile"]:
        from modelserver.profile_cli import main as profile

        profile(sys.argv[2:])
    try:
        settings = CliApp.run(Settings)
    except (ValidationError, SettingsError) as error:
        exit_with_reason(f"invalid configuration: {_one_line(error)}", _DEFAULT_TERMINATION_LOG)
    for variable in _THREAD_VARIABLES:
        os.environ.setdefault(variable, str(settings.predict_threads))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in ignored_variables(os.environ):
        logging.getLogger("modelserver").warning(
            "ignoring environment variable %s: settings are read only from upper-case"
            " MODELSERVER_* names",
            name,
        )
    # Imported only now, so that numpy, xgboost and BLAS see the thread settings above.
    from modelserver.serve import serve

    try:
        serve(settings)
    except StartupError as error:
        exit_with_reason(str(error), settings.termination_log)


def _one_line(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in problem['loc']) or 'settings'}: {problem['msg']}"
            for problem in error.errors(include_url=False)
        )
    return str(error)


if __name__ == "__main__":
    main()
