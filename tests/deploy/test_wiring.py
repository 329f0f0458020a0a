"""What Kubernetes' schemas cannot see: the objects of each shipped set of manifests
(chart defaults, chart with every option, kustomize base) fit together."""

from __future__ import annotations

import pytest

from deploy import DEPLOY_EXTRA

pytest.importorskip("yaml", reason=DEPLOY_EXTRA)
pytest.importorskip("helm_python", reason=DEPLOY_EXTRA)
pytest.importorskip("kubernetes_validate", reason=DEPLOY_EXTRA)

from deploy import schemas
from deploy.manifests import (
    Release,
    arg_value,
    container,
    container_ports,
    env_value,
    pod_labels,
    pod_spec,
    port_exists,
    selects,
)

DOCUMENTED_CLIENT_LABEL = {"django-ws/broker-client": "true"}


def test_every_object_passes_its_schema(release: Release) -> None:
    for doc in release.docs:
        schemas.validate(doc)
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in release.docs)
    print(f"{len(kinds)} objects valid for Kubernetes 1.30: {', '.join(kinds)}")


def test_workload_selectors_match_their_pods(release: Release) -> None:
    for workload in release.all("Deployment") + release.all("StatefulSet"):
        assert selects(workload["spec"]["selector"]["matchLabels"], pod_labels(workload))


def test_services_select_pods_with_the_target_ports(release: Release) -> None:
    workloads = release.all("Deployment") + release.all("StatefulSet")
    for service in release.all("Service"):
        name = service["metadata"]["name"]
        targets = [w for w in workloads if selects(service["spec"]["selector"], pod_labels(w))]
        assert len(targets) == 1, f"Service {name} selects {len(targets)} workloads"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert port_exists(targets[0], target), f"Service {name}: no container port {target}"


def test_disruption_budgets_and_autoscaler_find_their_workloads(release: Release) -> None:
    workloads = release.all("Deployment") + release.all("StatefulSet")
    for pdb in release.all("PodDisruptionBudget"):
        matched = [w for w in workloads if selects(pdb["spec"]["selector"]["matchLabels"],
                                                   pod_labels(w))]
        assert len(matched) == 1, pdb["metadata"]["name"]
    for hpa in release.all("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        deployment = release.one("Deployment", target["name"])
        assert "replicas" not in deployment["spec"], "the HPA owns replicas; the chart must not"


def test_probes_use_ports_the_container_has(release: Release) -> None:
    for workload in release.all("Deployment") + release.all("StatefulSet"):
        for c in pod_spec(workload)["containers"]:
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = c.get(probe_name)
                if probe is None:
                    continue
                action = next(probe[k] for k in ("httpGet", "tcpSocket", "grpc") if k in probe)
                assert port_exists(workload, action["port"]), f"{c['name']} {probe_name}"


def test_edge_probes_are_the_health_endpoints(release: Release) -> None:
    edge = container(release.workload("edge"))
    health_port = container_ports(release.workload("edge"))["health"]
    assert arg_value(edge["args"], "--health").endswith(f":{health_port}")
    assert edge["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert edge["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    bind_port = int(arg_value(edge["args"], "--bind").rsplit(":", 1)[1])
    assert container_ports(release.workload("edge"))["http"] == bind_port
    assert "--no-embedded-broker" in edge["args"]


def test_broker_probes_ask_the_grpc_health_service(release: Release) -> None:
    broker_workload = release.workload("broker")
    broker = container(broker_workload)
    grpc_port = container_ports(broker_workload)["grpc"]
    assert arg_value(broker["args"], "--listen") == f"0.0.0.0:{grpc_port}"
    for probe_name in ("readinessProbe", "livenessProbe"):
        probe = broker[probe_name]
        if "--tls-cert" in broker["args"]:
            # The kubelet's gRPC probe cannot speak TLS to this port.
            assert probe["tcpSocket"]["port"] == "grpc"
        else:
            assert probe["grpc"]["port"] == grpc_port


def test_shard_count_agrees_everywhere(release: Release) -> None:
    statefulset = release.one("StatefulSet")
    replicas = statefulset["spec"]["replicas"]
    broker = container(statefulset)
    edge = container(release.workload("edge"))
    assert int(arg_value(broker["args"], "--shards")) == replicas
    assert env_value(edge, "DJANGO_WS_SHARDS") == str(replicas)
    expected = release.values.get("broker", {}).get("replicas", 2)
    assert replicas == expected
    print(f"{release.name}: {replicas} shards in StatefulSet, --shards and DJANGO_WS_SHARDS")


def test_edges_name_every_broker_pod(release: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    """DJANGO_WS_BROKERS, as django_ws_client parses it, names pod K of the StatefulSet
    through the headless Service, on the gRPC port, for every ordinal."""
    from django_ws_client.transport.config import parse_config

    statefulset = release.one("StatefulSet")
    headless = release.one("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    grpc_port = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc")
    edge = container(release.workload("edge"))
    env_names = [e["name"] for e in edge["env"]]
    # $(POD_NAMESPACE) is expanded by the kubelet only when declared before its use.
    assert env_names.index("POD_NAMESPACE") < env_names.index("DJANGO_WS_BROKERS")
    namespace_env = next(e for e in edge["env"] if e["name"] == "POD_NAMESPACE")
    assert namespace_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    template = env_value(edge, "DJANGO_WS_BROKERS")
    assert template is not None
    monkeypatch.setenv("DJANGO_WS_BROKERS", template.replace("$(POD_NAMESPACE)", "apps"))
    monkeypatch.setenv("DJANGO_WS_SHARDS", env_value(edge, "DJANGO_WS_SHARDS") or "")
    for name in ("DJANGO_WS_TLS_CA", "DJANGO_WS_TLS_CERT", "DJANGO_WS_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    config = parse_config({})
    name = statefulset["metadata"]["name"]
    service = headless["metadata"]["name"]
    assert config.brokers == tuple(
        f"{name}-{k}.{service}.apps.svc.cluster.local:{grpc_port}"
        for k in range(statefulset["spec"]["replicas"])
    )


def test_pods_outlive_their_drain(release: Release) -> None:
    edge_workload = release.workload("edge")
    grace = float(arg_value(container(edge_workload)["args"], "--grace"))
    # The edge kills workers that outlast --grace after 2 more seconds.
    assert pod_spec(edge_workload)["terminationGracePeriodSeconds"] >= grace + 3
    broker_workload = release.workload("broker")
    args = container(broker_workload)["args"]
    drain = float(arg_value(args, "--drain-seconds")) + float(arg_value(args, "--grace-seconds"))
    assert pod_spec(broker_workload)["terminationGracePeriodSeconds"] > drain
    edge_budget = pod_spec(edge_workload)["terminationGracePeriodSeconds"]
    broker_budget = pod_spec(broker_workload)["terminationGracePeriodSeconds"]
    print(f"edge: --grace {grace:g} s, pod {edge_budget} s; "
          f"broker: drain {drain:g} s, pod {broker_budget} s")


def test_network_policy_admits_only_edges_and_publishers(release: Release) -> None:
    policy = release.one("NetworkPolicy")
    broker_workload = release.workload("broker")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels(broker_workload))
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    edge_labels = pod_labels(release.workload("edge"))
    grpc_rules = []
    for rule in policy["spec"]["ingress"]:
        ports = rule.get("ports")
        assert ports, "a rule without ports opens every port"
        if any(p["port"] in ("grpc", container_ports(broker_workload)["grpc"]) for p in ports):
            grpc_rules.append(rule)
    assert len(grpc_rules) == 1
    peers = grpc_rules[0]["from"]
    assert all(set(peer) == {"podSelector"} for peer in peers), "same namespace pods only"
    selectors = [peer["podSelector"]["matchLabels"] for peer in peers]
    assert any(selects(s, edge_labels) for s in selectors)
    assert DOCUMENTED_CLIENT_LABEL in selectors
    for s in selectors:
        assert s == DOCUMENTED_CLIENT_LABEL or selects(s, edge_labels), f"unexpected peer {s}"


def test_broker_is_not_reachable_from_outside(release: Release) -> None:
    broker_labels = pod_labels(release.workload("broker"))
    broker_services = [s for s in release.all("Service")
                       if selects(s["spec"]["selector"], broker_labels)]
    assert broker_services
    for service in broker_services:
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
        assert service["spec"]["clusterIP"] == "None"
    names = {s["metadata"]["name"] for s in broker_services}
    for ingress in release.all("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] not in names


def test_pods_run_locked_down(release: Release) -> None:
    for workload in release.all("Deployment") + release.all("StatefulSet"):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            context = c["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, "a writable /tmp under the read-only root"


def test_command_lines_parse_with_the_real_parsers(release: Release,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The arguments the manifests pass are ones the edge command and the broker CLI
    accept, and mean what the manifests intend."""
    from django_ws_broker.cli import build_parser, options_from_args
    from django_ws_client.management.commands.websockets_server import Command

    edge = container(release.workload("edge"))
    assert edge["command"] == ["python", "manage.py", "websockets_server"]
    parsed = vars(Command().create_parser("manage.py", "websockets_server").parse_args(edge["args"]))
    assert parsed["no_embedded_broker"] is True
    assert parsed["workers"] >= 1
    assert parsed["grace"] == float(arg_value(edge["args"], "--grace"))

    statefulset = release.one("StatefulSet")
    broker = container(statefulset)
    assert broker["command"] == ["django-ws-broker"]
    last = statefulset["spec"]["replicas"] - 1
    # The broker takes its ordinal from the pod's hostname, <statefulset>-K.
    monkeypatch.setenv("HOSTNAME", f"{statefulset['metadata']['name']}-{last}")
    options = options_from_args(build_parser().parse_args(broker["args"]))
    assert (options.ordinal, options.shards) == (last, statefulset["spec"]["replicas"])
    assert options.metrics_address == f"0.0.0.0:{container_ports(statefulset)['metrics']}"
    assert (options.tls is not None) == ("--tls-cert" in broker["args"])


def test_role_secrets_reach_each_side_as_it_needs(release: Release,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Brokers get every role's secret file (through the real CLI parser), edges only
    the edge role's, from the same Secret, on whole-volume mounts that Kubernetes
    updates in place (a subPath mount would never see a rotation)."""
    from django_ws_broker.cli import build_parser, options_from_args

    statefulset = release.one("StatefulSet")
    broker = container(statefulset)
    broker_mount = next(m for m in broker["volumeMounts"] if m["name"] == "auth")
    assert broker_mount["readOnly"] is True and "subPath" not in broker_mount
    for item in broker["env"]:
        monkeypatch.setenv(item["name"], item["value"])
    monkeypatch.setenv("HOSTNAME", f"{statefulset['metadata']['name']}-0")
    options = options_from_args(build_parser().parse_args(broker["args"]))
    assert options.role_secrets is not None
    root = broker_mount["mountPath"]
    assert (str(options.role_secrets.edge), str(options.role_secrets.publisher),
            str(options.role_secrets.admin)) == (f"{root}/edge", f"{root}/publisher",
                                                 f"{root}/admin")
    broker_volume = next(v for v in pod_spec(statefulset)["volumes"] if v["name"] == "auth")
    assert "items" not in broker_volume["secret"]

    edge_workload = release.workload("edge")
    edge = container(edge_workload)
    edge_mount = next(m for m in edge["volumeMounts"] if m["name"] == "auth")
    assert "subPath" not in edge_mount
    assert env_value(edge, "DJANGO_WS_SECRET_FILE") == f"{edge_mount['mountPath']}/edge"
    edge_volume = next(v for v in pod_spec(edge_workload)["volumes"] if v["name"] == "auth")
    assert edge_volume["secret"]["secretName"] == broker_volume["secret"]["secretName"]
    assert edge_volume["secret"]["items"] == [{"key": "edge", "path": "edge"}]
    names = {d["metadata"]["name"] for d in release.all("Secret")}
    expected = release.values.get("auth", {}).get("existingSecret")
    assert broker_volume["secret"]["secretName"] in (names | {expected})
    print(f"{release.name}: brokers read {root}/{{edge,publisher,admin}}, "
          f"edges only {edge_mount['mountPath']}/edge, from "
          f"{broker_volume['secret']['secretName']}")
