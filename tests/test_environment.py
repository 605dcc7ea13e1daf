"""environment.yml (conda users) stays consistent with pyproject.toml (the one place dependencies live)."""

import re
import tomllib

import yaml
from conftest import PROJECT


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((PROJECT / "environment.yml").read_text())
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    deps = env["dependencies"]
    pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert pythons == ["python=3.11"]
    assert project["requires-python"] == ">=3.11,<3.12"
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    # the project itself, installed by pip, with extras that pyproject declares; no second dependency list
    assert len(pip) == 1
    m = re.fullmatch(r"-e \.\[([a-z,]+)\]", pip[0])
    assert m, pip
    extras = set(m.group(1).split(","))
    assert extras <= set(project["optional-dependencies"])
    # the same extras as the Makefile's full install (make test), which installs every extra
    makefile = (PROJECT / "Makefile").read_text()
    assert f"ALL_EXTRAS  := {m.group(1)}" in makefile
    assert extras == set(project["optional-dependencies"]) - {"analysis"}  # analysis comes with notebooks
    assert "DEMO_EXTRAS := embedded" in makefile


def test_every_import_of_the_tests_is_declared():
    """Each third-party module the tests import comes from a package pyproject declares."""
    import ast

    declared = " ".join(tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"])
    modules = set()
    for path in (PROJECT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    third_party = {"pytest", "hypothesis", "psutil", "rouge_score", "yaml"} & modules
    names = {"rouge_score": "rouge-score", "yaml": "pyyaml"}
    for module in third_party:
        assert names.get(module, module) in declared, module


def test_ci_calls_the_readme_test_command():
    readme = (PROJECT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (PROJECT / ".ci" / "run").read_text()
