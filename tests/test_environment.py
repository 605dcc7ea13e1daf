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
    # the same extras as the Makefile's install
    makefile = (PROJECT / "Makefile").read_text()
    assert f'pip install -e ".[{m.group(1)}]"' in makefile


def test_ci_calls_the_readme_test_command():
    readme = (PROJECT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (PROJECT / ".ci" / "run").read_text()
