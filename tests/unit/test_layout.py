import importlib
import subprocess
import sys


def test_import_operator_is_the_stdlib_module(repo_root):
    # The operator's source lives in operator/, which must never shadow stdlib `operator`.
    import operator

    assert hasattr(operator, "itemgetter")
    assert not (repo_root / "operator" / "__init__.py").exists()
    assert "site-packages" not in str(operator.__file__)
    assert operator.__file__.startswith(sys.base_prefix) or "python3" in operator.__file__


def test_import_operator_from_repo_root_in_a_fresh_interpreter(repo_root):
    probe = "import operator, sys; print(operator.itemgetter.__module__, operator.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=repo_root, capture_output=True, text=True, check=True
    )
    module, path = result.stdout.split()
    assert module == "operator"
    assert not path.startswith(str(repo_root / "operator"))


def test_packages_import_under_their_names():
    assert importlib.import_module("modeldeploy.api").KIND == "ModelDeployment"
    assert importlib.import_module("modelserver").__name__ == "modelserver"


def test_console_scripts_exist(repo_root):
    bindir = repo_root / ".venv" / "bin"
    for script in ("modeldeploy-operator", "modelserver"):
        assert (bindir / script).exists(), f"console script {script} is not installed"
