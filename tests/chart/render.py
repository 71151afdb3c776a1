"""Render the tunewire chart offline with Helm's own library, and keep k8s/ in step with it.

``python -m tests.chart.render`` (what ``make k8s`` runs) renders ``charts/tunewire`` with
its default values (and consent to their PLAINTEXT Kafka) as release ``tunewire`` in
namespace ``tunewire`` and writes the objects to ``k8s/tunewire.yaml``; ``--check`` writes
nothing and exits 1 when ``k8s/`` differs from a fresh render. The chart is the only source:
never edit ``k8s/`` by hand.

Rendering goes through ``helm-python-sdk``, which embeds Helm's Go library, so the output is
what ``helm template`` gives. Its public ``Chart.render`` (0.2.x) cannot pass capabilities;
the native call it wraps accepts ``kube_version`` and ``api_versions`` (the equivalent of
``helm template --kube-version --api-versions``), so :func:`render` uses that call when API
versions are given, e.g. to render the ServiceMonitor gated on ``monitoring.coreos.com/v1``.
"""

from __future__ import annotations

import argparse
import collections.abc
import json
import pathlib
import sys
from typing import Any

import helm_python
import yaml
from helm_python import _native

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tunewire"
K8S = ROOT / "k8s"
RELEASE = "tunewire"
NAMESPACE = "tunewire"
KUBE_VERSION = "1.31.0"
"""The Kubernetes version the chart is rendered for and validated against."""

HOOK = "helm.sh/hook"

PLAINTEXT_CONSENT: dict[str, Any] = {"global": {"kafka": {"allowPlaintext": True}}}
"""What every install that keeps the default PLAINTEXT Kafka must add (the chart refuses it in
production otherwise); k8s/ and the tests' renders of the defaults carry it."""

#: The order Helm installs kinds in (the subset this chart uses); k8s/ follows it so that
#: ``kubectl apply -f`` creates service accounts and config maps before the pods need them.
INSTALL_ORDER = (
    "Namespace",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "Role",
    "RoleBinding",
    "Service",
    "Pod",
    "Deployment",
    "HorizontalPodAutoscaler",
    "Job",
    "ServiceMonitor",
    "PrometheusRule",
)

K8S_README = """\
# k8s/ — plain manifests for clusters without Helm

Generated from `charts/tunewire` with its default values (release `tunewire`, namespace
`tunewire`) by `make k8s` (`python -m tests.chart.render`). Do not edit: change the chart and
regenerate; `make test` fails when this folder differs from a fresh render.

```sh
kubectl create namespace tunewire
tunewire principal ops --role admin --role operator --role reviewer --role viewer
kubectl -n tunewire create secret generic tunewire-principals \\
  --from-literal=principals='[<the entry it printed>]'
kubectl apply -f k8s/tunewire.yaml
```

These manifests point at Kafka `kafka-bootstrap.kafka.svc:9092` over PLAINTEXT, rendered with
`global.kafka.allowPlaintext: true` (the chart refuses unencrypted Kafka in production without
it; prefer SASL_SSL through the chart, see docs/security.md), and the S3 bucket
`tunewire` on AWS with the standard credential chain. train and evaluate launch their Jobs
with `ghcr.io/tunewire/trainer:0.1.0`, requesting `nvidia.com/gpu` on any node that has it (no
node selector, no tolerations). serve runs one pod with `docker.io/vllm/vllm-openai:v0.26.0`
beside it on one `nvidia.com/gpu`, serving `Qwen/Qwen2.5-0.5B-Instruct` downloaded from the
Hugging Face hub at start. Anything else (SASL, TLS, MinIO, IRSA, a GPU node pool, another
model, autoscaling, ServiceMonitors) needs the chart: see docs/install.md.
"""


def render(
    values: dict[str, Any] | None = None,
    *,
    api_versions: collections.abc.Sequence[str] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> dict[str, str]:
    """Render the chart; returns template path -> rendered text (as ``helm template``).

    Values that leave Kafka on its default PLAINTEXT get :data:`PLAINTEXT_CONSENT` unless
    they say ``allowPlaintext`` themselves. Raises ``helm_python.HelmValuesError`` with the
    schema's message for wrong values, ``helm_python.HelmRenderError`` for a template's refusal.
    """
    values = with_plaintext_consent(values)
    chart = helm_python.Chart.load(CHART)
    if not api_versions:
        return chart.render(values, name=release, namespace=namespace, is_install=True)
    options = {
        "name": release,
        "namespace": namespace,
        "is_install": True,
        "kube_version": f"v{KUBE_VERSION}",
        "api_versions": list(api_versions),
    }
    rendered = _native.call_string(
        "helm_render",
        chart._raw(),
        None if values is None else json.dumps(values),
        json.dumps(options),
    )
    manifests: dict[str, str] = json.loads(rendered)
    return manifests


def with_plaintext_consent(values: dict[str, Any] | None) -> dict[str, Any]:
    """``values`` plus :data:`PLAINTEXT_CONSENT` where they leave Kafka's protocol unsaid."""
    values = dict(values or {})
    global_ = dict(values.get("global") or {})
    kafka = dict(global_.get("kafka") or {})
    if "securityProtocol" in kafka or "allowPlaintext" in kafka:
        return values
    kafka.update(PLAINTEXT_CONSENT["global"]["kafka"])
    return {**values, "global": {**global_, "kafka": kafka}}


def objects(rendered: collections.abc.Mapping[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object in a render (hooks included, NOTES.txt left out)."""
    found: list[dict[str, Any]] = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        found.extend(doc for doc in yaml.safe_load_all(rendered[path]) if doc)
    return found


def is_hook(obj: collections.abc.Mapping[str, Any]) -> bool:
    """Whether Helm runs this object as a hook (a ``helm test`` pod) instead of installing it."""
    return HOOK in (obj.get("metadata", {}).get("annotations") or {})


def _order(obj: collections.abc.Mapping[str, Any]) -> tuple[int, str]:
    kind = obj["kind"]
    rank = INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)
    return rank, obj["metadata"]["name"]


def k8s_files() -> dict[str, str]:
    """The files of k8s/ as a fresh render of the default values makes them."""
    installed = sorted((o for o in objects(render()) if not is_hook(o)), key=_order)
    header = (
        "# Generated from charts/tunewire (default values and global.kafka.allowPlaintext:\n"
        "# true, release tunewire, namespace tunewire) by `make k8s`. Do not edit: change the\n"
        "# chart and regenerate.\n"
    )
    body = "---\n".join(yaml.safe_dump(o, sort_keys=False, width=100) for o in installed)
    return {"tunewire.yaml": header + "---\n" + body, "README.md": K8S_README}


def differences(folder: pathlib.Path = K8S) -> list[str]:
    """Names of files in ``folder`` that are missing, stale or not produced by the render."""
    expected = k8s_files()
    present = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
    stale = [
        name
        for name, text in expected.items()
        if name not in present or (folder / name).read_text(encoding="utf-8") != text
    ]
    return sorted(stale + sorted(present - expected.keys()))


def write(folder: pathlib.Path = K8S) -> None:
    """Replace ``folder``'s files with a fresh render."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = k8s_files()
    for path in folder.iterdir():
        if path.is_file() and path.name not in expected:
            path.unlink()
    for name, text in expected.items():
        (folder / name).write_text(text, encoding="utf-8")


def main(argv: collections.abc.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when k8s/ differs from a fresh render"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = differences()
        if stale:
            sys.stderr.write(f"k8s/ is stale ({', '.join(stale)}); run `make k8s`\n")
            return 1
        return 0
    write()
    sys.stderr.write(f"wrote {K8S.relative_to(ROOT)}/ from {CHART.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
