"""k8s/ is the chart rendered with its default values, never a hand-edited copy."""

from __future__ import annotations

import pathlib

import yaml

from tests.chart import render


def test_k8s_matches_a_fresh_render() -> None:
    assert render.differences() == [], "k8s/ is stale: run `make k8s`"


def test_the_check_notices_drift(tmp_path: pathlib.Path) -> None:
    render.write(tmp_path)
    assert render.differences(tmp_path) == []
    manifest = tmp_path / "tunewire.yaml"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("replicas: 2", "replicas: 5"))
    (tmp_path / "extra.yaml").write_text("kind: ConfigMap\n")
    assert render.differences(tmp_path) == ["extra.yaml", "tunewire.yaml"]
    assert render.main(["--check"]) == 0


def test_k8s_holds_the_installed_objects_in_the_tunewire_namespace() -> None:
    docs = [
        d
        for d in yaml.safe_load_all((render.K8S / "tunewire.yaml").read_text(encoding="utf-8"))
        if d
    ]
    assert {d["metadata"]["namespace"] for d in docs} == {"tunewire"}
    assert not [d for d in docs if render.is_hook(d)]  # helm-test pods stay in the chart
    kinds = [d["kind"] for d in docs]
    assert kinds.index("ServiceAccount") < kinds.index("Deployment")
    assert kinds.index("ConfigMap") < kinds.index("Deployment")
