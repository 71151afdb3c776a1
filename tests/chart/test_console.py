"""The console's pipeline overview in a cluster: evaluate asks label's and train's HTTP APIs.

evaluate builds its settings from the pod's environment (EvaluateSettings), so these tests
build them from the rendered pod the same way and hold the peers it gets to the rendered
Services. The release's network is default-deny: the only traffic the console adds is
evaluate's pods to label's and train's pods on their HTTP ports, and only between services
that are deployed; `evaluate.console.enabled: false` takes all of it away.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib import parse

import pytest

from tests.chart import render
from tests.support.chart import named, of_kind, pod_env, service_container, settings_from
from tunewire.evaluate import config as evaluate_config

EVALUATE = "tunewire-evaluate"
PEERS = {"label": "tunewire-label", "train": "tunewire-train"}
#: label and train on ports of their own, so a rule on the wrong service's port shows.
OWN_PORTS: dict[str, Any] = {"label": {"port": 8081}, "train": {"port": 8082}}
CONSOLE_OFF = {"evaluate": {"console": {"enabled": False}}}


def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return render.objects(render.render(values))


def _with(values: dict[str, Any], **blocks: dict[str, Any]) -> dict[str, Any]:
    """``values`` with more keys in some service blocks."""
    merged = copy.deepcopy(values)
    for service, block in blocks.items():
        merged.setdefault(service, {}).update(block)
    return merged


def _console(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> evaluate_config.ConsoleSettings:
    env = pod_env(objects, EVALUATE)
    return settings_from(env, evaluate_config.EvaluateSettings, monkeypatch).console


def _pod_labels(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The labels of every pod the release runs, by Deployment (or helm-test Pod) name."""
    labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in of_kind(objects, "Deployment")
    }
    labels.update({p["metadata"]["name"]: p["metadata"]["labels"] for p in of_kind(objects, "Pod")})
    return labels


def _http_port(objects: list[dict[str, Any]], deployment: str) -> int:
    """The container port named http of a Deployment's service container."""
    container = service_container(named(objects, "Deployment", deployment))
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    return int(port)


def _selected(peers: list[dict[str, Any]], objects: list[dict[str, Any]]) -> set[str]:
    """The release's pods (by Deployment or Pod name) that some NetworkPolicy peers select.

    Only pod selectors in the policy's own namespace with matchLabels are expected here: a
    namespace selector or an address block would reach beyond the release.
    """
    selected: set[str] = set()
    for peer in peers:
        assert set(peer) == {"podSelector"}, peer
        assert set(peer["podSelector"]) == {"matchLabels"}, peer
        wanted = peer["podSelector"]["matchLabels"].items()
        selected |= {
            name for name, labels in _pod_labels(objects).items() if wanted <= labels.items()
        }
    return selected


def _added(now: list[dict[str, Any]], before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules of ``now`` beyond ``before``, which must all still be there."""
    assert all(rule in now for rule in before)
    added = [rule for rule in now if rule not in before]
    assert len(now) == len(before) + len(added)
    return added


def _policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "NetworkPolicy")}


def test_the_overview_asks_the_rendered_label_and_train_services(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    peers = _console(rendered, monkeypatch).peers
    assert set(peers) == set(PEERS)
    for name, url in peers.items():
        service = named(rendered, "Service", PEERS[name])
        (port,) = service["spec"]["ports"]
        parts = parse.urlsplit(url)
        assert parts.scheme == "http" and parts.path == ""
        namespace = service["metadata"]["namespace"]
        assert parts.hostname == f"{PEERS[name]}.{namespace}.svc"
        assert parts.port == port["port"]
        # The Service sends to the peer's own pods, on the port its container listens on.
        selected = {
            n
            for n, labels in _pod_labels(rendered).items()
            if service["spec"]["selector"].items() <= labels.items()
        }
        assert selected == {PEERS[name]}
        assert port["targetPort"] == "http"
        assert port["port"] == _http_port(rendered, PEERS[name])


def test_only_evaluate_to_label_and_train_is_opened_on_their_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on = _render(OWN_PORTS)
    off = _render(_with(OWN_PORTS, **CONSOLE_OFF))
    assert _console(off, monkeypatch).peers == {}
    peers = _console(on, monkeypatch).peers
    assert {n: parse.urlsplit(u).port for n, u in peers.items()} == {"label": 8081, "train": 8082}
    policies_on, policies_off = _policies(on), _policies(off)
    assert set(policies_on) == set(policies_off)

    # evaluate: out to each peer's pods on that peer's port, in unchanged.
    evaluate_on, evaluate_off = policies_on[EVALUATE], policies_off[EVALUATE]
    assert evaluate_on["ingress"] == evaluate_off["ingress"]
    reached: dict[str, list[dict[str, Any]]] = {}
    for rule in _added(evaluate_on["egress"], evaluate_off["egress"]):
        (target,) = _selected(rule["to"], on)
        reached[target] = rule["ports"]
    assert reached == {
        deployment: [{"port": _http_port(on, deployment), "protocol": "TCP"}]
        for deployment in PEERS.values()
    }

    # label and train: in from evaluate's pods only, on their own port; out unchanged.
    for deployment in PEERS.values():
        peer_on, peer_off = policies_on[deployment], policies_off[deployment]
        assert peer_on["egress"] == peer_off["egress"]
        (rule,) = _added(peer_on["ingress"], peer_off["ingress"])
        assert _selected(rule["from"], on) == {EVALUATE}
        assert rule["ports"] == [{"port": _http_port(on, deployment), "protocol": "TCP"}]

    # Nothing else differs: no other policy, and no other object but evaluate's settings.
    for name in set(policies_on) - {EVALUATE, *PEERS.values()}:
        assert policies_on[name] == policies_off[name], name
    assert {(o["kind"], o["metadata"]["name"]) for o in on} == {
        (o["kind"], o["metadata"]["name"]) for o in off
    }
    changed = {
        (o["kind"], o["metadata"]["name"])
        for o in on
        if o["kind"] != "NetworkPolicy" and o not in off
    }
    assert changed == {("ConfigMap", EVALUATE), ("Deployment", EVALUATE)}
    config_on = named(on, "ConfigMap", EVALUATE)["data"]
    config_off = named(off, "ConfigMap", EVALUATE)["data"]
    assert set(config_on) - set(config_off) == {"TUNEWIRE_CONSOLE__PEERS"}
    assert {k: v for k, v in config_on.items() if k in config_off} == config_off
    # The Deployment differs by its config checksum only: the pod rolls to pick up the peers.
    pod_on = copy.deepcopy(named(on, "Deployment", EVALUATE))
    pod_off = copy.deepcopy(named(off, "Deployment", EVALUATE))
    for pod in (pod_on, pod_off):
        del pod["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert pod_on == pod_off


@pytest.mark.parametrize("absent", sorted(PEERS))
def test_a_peer_that_is_not_deployed_is_left_out(
    absent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (present,) = set(PEERS) - {absent}
    objects = _render({absent: {"enabled": False}})
    peers = _console(objects, monkeypatch).peers
    assert set(peers) == {present}
    assert parse.urlsplit(peers[present]).hostname == f"{PEERS[present]}.tunewire.svc"
    policies = _policies(objects)
    baseline = _policies(_render({absent: {"enabled": False}, **CONSOLE_OFF}))
    (rule,) = _added(policies[EVALUATE]["egress"], baseline[EVALUATE]["egress"])
    assert _selected(rule["to"], objects) == {PEERS[present]}
    (rule,) = _added(policies[PEERS[present]]["ingress"], baseline[PEERS[present]]["ingress"])
    assert _selected(rule["from"], objects) == {EVALUATE}


def test_without_evaluate_label_and_train_admit_nothing_new() -> None:
    objects = _render({"evaluate": {"enabled": False}})
    baseline = _render({"evaluate": {"enabled": False, "console": {"enabled": False}}})
    assert _policies(objects) == _policies(baseline)
    assert EVALUATE not in _policies(objects)


def test_without_network_policies_the_peers_are_still_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = _render({"global": {"networkPolicy": {"enabled": False}}})
    assert not of_kind(objects, "NetworkPolicy")
    assert set(_console(objects, monkeypatch).peers) == set(PEERS)


def test_the_install_guide_says_where_the_console_is() -> None:
    guide = (render.ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    for topic in (
        "svc/tunewire-label",
        "/console/annotate",
        "svc/tunewire-evaluate",
        "/console/review",
        "/console/history",
        "/console/overview",
        "evaluate.console.enabled",
    ):
        assert topic in guide, topic
