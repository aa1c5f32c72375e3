"""helm/omnistock: lint, render, validate against Kubernetes' own schemas, and the chart's
conventions (security, probes, selectors, secrets by reference, network policies)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import (
    CHART,
    CI_VALUES,
    DEFAULT_VALUES,
    ROOT,
    chart_services,
    helm_template,
    of_kind,
    pod_specs,
    pod_template,
    render,
    run,
    service_names,
    tool,
)

from omnistock.events.service import discover
from omnistock.events.topics import TOPICS, registry_document

#: Three Kubernetes minor versions, 1.30 onwards (kubernetes-validate ships their schemas).
KUBERNETES_VERSIONS = ("1.30.0", "1.32.0", "1.34.0")
#: Kinds without a schema in kubernetes-validate: custom resources of operators the chart
#: builds on. KafkaTopic is checked against our own CRD below.
CUSTOM_KINDS = {
    "KafkaTopic",
    "ServiceMonitor",
    "PrometheusRule",
    "Kafka",
    "KafkaNodePool",
    "Cluster",
    "Database",
}
CRD = yaml.safe_load((CHART / "files" / "crds" / "kafkatopics.yaml").read_text())


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint_strict(values: Path) -> None:
    run([tool("helm"), "lint", "--strict", str(CHART), "--values", str(values)])


def test_every_object_validates_against_three_kubernetes_versions(
    renders: dict[str, str], tmp_path: Path
) -> None:
    files = []
    for name, manifest in renders.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(manifest)
        files.append(str(path))
    validator = Path(__file__).parent / "validate_manifests.py"

    output = run(
        [tool("python"), str(validator), ",".join(KUBERNETES_VERSIONS), *files], check=False
    )

    problems = output.splitlines()
    unvalidated = {line.removeprefix("no schema: ") for line in problems if "no schema" in line}
    assert [line for line in problems if "no schema" not in line] == []
    assert {api.rsplit("/", 1)[1] for api in unvalidated} <= CUSTOM_KINDS
    assert "apiextensions.k8s.io/v1/CustomResourceDefinition" not in unvalidated


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD's structural schema, rejecting unknown fields (the API server would prune
    them silently; a typo in a template must fail here instead)."""
    schema = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if "properties" in schema:
        schema["properties"] = {
            k: v if k == "metadata" else _strict(v) for k, v in schema["properties"].items()
        }
        schema.setdefault("additionalProperties", False)
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = _strict(schema["additionalProperties"])
    if "items" in schema:
        schema["items"] = _strict(schema["items"])
    return schema


def test_kafka_topics_match_the_crd_schema(objects: dict[str, list[dict[str, Any]]]) -> None:
    [version] = CRD["spec"]["versions"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    topics = [t for rendered in objects.values() for t in of_kind(rendered, "KafkaTopic")]

    assert topics
    for topic in topics:
        jsonschema.validate(topic, schema)


def test_the_crd_rejects_shrinking_and_renaming_at_admission() -> None:
    [version] = CRD["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {rule["rule"] for rule in spec["x-kubernetes-validations"]}
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}

    assert rules == {
        "self.topicName == oldSelf.topicName",
        "self.partitions >= oldSelf.partitions",
    }
    assert spec["properties"]["deletionPolicy"]["default"] == "Retain"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert CRD["spec"]["names"]["shortNames"] == ["kt"]
    # k8s/ installs the very same file.
    assert (ROOT / "k8s" / "kafkatopics.crd.yaml").read_text() == (
        CHART / "files" / "crds" / "kafkatopics.yaml"
    ).read_text()


def test_the_crd_upgrades_with_the_chart_and_survives_uninstall(
    default_objects: list[dict[str, Any]],
) -> None:
    [crd] = of_kind(default_objects, "CustomResourceDefinition")

    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["spec"] == CRD["spec"]
    assert not (CHART / "crds").exists()


def test_topics_are_rendered_from_the_registry(objects: dict[str, list[dict[str, Any]]]) -> None:
    default = {
        t["spec"]["topicName"]: t["spec"] for t in of_kind(objects["default-values"], "KafkaTopic")
    }
    production = of_kind(objects["production-values"], "KafkaTopic")

    assert set(default) == {topic.name for topic in TOPICS}
    for topic in TOPICS:
        assert default[topic.name]["partitions"] == topic.partitions
        assert default[topic.name]["config"] == topic.config()
        assert default[topic.name]["deletionPolicy"] == "Retain"
    # Production: replication factor 3 and min.insync.replicas 2 on every topic.
    assert len(production) == len(TOPICS)
    for topic in production:
        assert topic["spec"]["replicationFactor"] == 3
        assert topic["spec"]["config"]["min.insync.replicas"] == "2"


def test_the_charts_copy_of_the_registry_is_current() -> None:
    written = json.loads((CHART / "files" / "topics.json").read_text())

    assert written == registry_document(), (
        "run: uv run omnistock-events topics --json > helm/omnistock/files/topics.json"
    )


def test_a_first_install_declares_topics_on_the_next_upgrade() -> None:
    # Helm maps every object before creating any: with the CRD not yet in the cluster,
    # a KafkaTopic would fail the whole install. NOTES.txt tells what to do.
    done = helm_template(values=[DEFAULT_VALUES], api_versions=())
    notes = run(
        [tool("helm"), "install", "x", str(CHART), "--dry-run=client", "-f", str(DEFAULT_VALUES)],
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "\nkind: KafkaTopic\n" not in done.stdout
    assert "kind: ServiceMonitor" not in done.stdout
    assert "Run the same `helm upgrade --install` once more" in notes


@pytest.mark.parametrize(
    ("assignment", "complaint"),
    [
        ("services.inventory.port=0", "/services/inventory/port"),
        ("services.billing.enabled=true", "'billing' not allowed"),
        ("kafka.securityProtocol=SASL", "/kafka/securityProtocol"),
        ("kafka.topics.deletionPolicy=Forget", "/kafka/topics/deletionPolicy"),
        ("kafka.topics.replicationFactor=0", "/kafka/topics/replicationFactor"),
        ("kafka.bootstrapServers=kafka", "/kafka/bootstrapServers"),
        ("services.orders.env.DATABASE_URL=postgresql://u:secret@db/x", "DATABASE_URL"),
        ("kafka.sasl.mechanism=PLAIN", "/kafka"),
        ("operator.image.digest=latest", "/operator/image/digest"),
        ("logLevel=LOUD", "/logLevel"),
        ("auth.jwks.url=ftp://login.example/jwks", "/auth/jwks/url"),
        ("auth.algorithms={HS256}", "/auth/algorithms"),
        ("auth.maxBodyBytes=10", "/auth/maxBodyBytes"),
        ("auth.apiKeys.key=../keys.json", "/auth/apiKeys/key"),
        # Authentication is configured under auth, not per service.
        ("services.orders.env.AUTH_ISSUER=https://login.example/", "AUTH_ISSUER"),
        ("audit.pushgateway.url=pushgateway:9091", "/audit/pushgateway/url"),
    ],
)
def test_values_schema_rejects_bad_values(assignment: str, complaint: str) -> None:
    done = helm_template(values=[DEFAULT_VALUES], sets=[assignment])

    assert done.returncode != 0
    assert complaint in done.stderr, done.stderr


def test_every_workload_is_locked_down(objects: dict[str, list[dict[str, Any]]]) -> None:
    for rendered in objects.values():
        for name, spec in pod_specs(rendered):
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True, name
            assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes["tmp"], name
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, name
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"] == {"drop": ["ALL"]}, name
                assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name
                assert container["resources"]["requests"], name
                assert container["resources"]["limits"]["memory"], name


def test_service_probes_use_the_real_health_endpoints(
    default_objects: list[dict[str, Any]],
) -> None:
    specs = discover()
    deployments = {d["metadata"]["name"]: d for d in of_kind(default_objects, "Deployment")}

    assert set(service_names()) <= set(chart_services())
    for service in chart_services():
        [container] = deployments[f"omnistock-{service}"]["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        # Readiness is false while the service replays the log (libs/events http.Health).
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["args"][0] == service
        if service in specs:  # installed in this workspace (replenishment may not be yet)
            assert container["ports"][0]["containerPort"] == specs[service].default_port


def test_secrets_are_only_referenced(objects: dict[str, list[dict[str, Any]]]) -> None:
    for rendered in objects.values():
        assert not of_kind(rendered, "Secret")
        for name, spec in pod_specs(rendered):
            for container in spec["containers"]:
                for env in container.get("env", []):
                    secret_like = any(
                        word in env["name"] for word in ("PASSWORD", "SECRET", "TOKEN", "KEY")
                    )
                    if env["name"].endswith("_FILE"):
                        # A path into a volume mounted from a Secret or ConfigMap.
                        assert env["value"].startswith("/etc/omnistock/"), (name, env)
                    elif secret_like or env["name"] == "DATABASE_URL":
                        value = env.get("value")
                        # Composed from Secret-backed variables ($(DATABASE_PASSWORD)) is fine.
                        assert value is None or "$(DATABASE_PASSWORD)" in value, (name, env)
        for config_map in of_kind(rendered, "ConfigMap"):
            for key in config_map.get("data", {}):
                assert not any(w in key for w in ("PASSWORD", "DATABASE_URL")), key


def test_selectors_are_name_and_instance(objects: dict[str, list[dict[str, Any]]]) -> None:
    for rendered in objects.values():
        selectors = [d["spec"]["selector"]["matchLabels"] for d in of_kind(rendered, "Deployment")]
        selectors += [s["spec"]["selector"] for s in of_kind(rendered, "Service")]
        selectors += [
            p["spec"]["selector"]["matchLabels"] for p in of_kind(rendered, "PodDisruptionBudget")
        ]
        for selector in selectors:
            assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
        deployments = of_kind(rendered, "Deployment")
        # No two workloads share a selector.
        distinct = {tuple(sorted(s.items())) for s in selectors[: len(deployments)]}
        assert len(distinct) == len(deployments)
        for obj in rendered:
            labels = obj["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/part-of") == "omnistock", obj["metadata"]["name"]
            assert labels.get("app.kubernetes.io/managed-by") == "Helm"


def test_every_pod_has_a_network_policy_with_only_the_egress_it_needs(
    production_objects: list[dict[str, Any]],
) -> None:
    policies = of_kind(production_objects, "NetworkPolicy")
    workloads = [(o, pod_template(o)) for o in production_objects]
    assert any(o["kind"] == "CronJob" for o, template in workloads)
    for workload, template in workloads:
        if template is None:
            continue
        name = workload["metadata"]["name"]
        labels = template["metadata"]["labels"]
        [policy] = [
            p
            for p in policies
            if all(labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
        ]
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, name
        ports = {
            port["port"] for rule in policy["spec"]["egress"] for port in rule.get("ports", [])
        }
        allowed = {53, 9096, 5432} | ({443, 6443} if "operator" in name else set())
        if workload["kind"] == "Deployment" and "operator" not in name:
            allowed |= {443}  # the token issuer's JWKS (auth.jwks.url)
        if name.endswith("-test"):
            allowed = {53}
        if name.endswith("-drain-topics"):
            allowed = {53, 443, 6443}
        if name.endswith("-inventory-audit"):
            allowed = {53, 9096, 5432, 9091}  # and the Pushgateway
        assert ports <= allowed, (name, ports)


def test_the_operator_runs_alone(default_objects: list[dict[str, Any]]) -> None:
    [operator] = [
        d for d in of_kind(default_objects, "Deployment") if "operator" in d["metadata"]["name"]
    ]
    [container] = operator["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert env["OPERATOR_NAMESPACES"] == "shop"
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "omnistock-topic-operator"


def test_k8s_rbac_grants_what_the_chart_grants(default_objects: list[dict[str, Any]]) -> None:
    text = (ROOT / "k8s" / "operator-rbac.yaml").read_text()
    k8s = {o["kind"]: o for o in yaml.safe_load_all(text) if o}
    [role] = [r for r in of_kind(default_objects, "Role") if "drain" not in r["metadata"]["name"]]
    [cluster_role] = of_kind(default_objects, "ClusterRole")

    assert k8s["Role"]["rules"] == role["rules"]
    assert k8s["ClusterRole"]["rules"] == cluster_role["rules"]


def test_monitoring_objects(
    production_objects: list[dict[str, Any]], chart_with_monitoring_files: Path
) -> None:
    monitors = of_kind(production_objects, "ServiceMonitor")
    [rule] = of_kind(production_objects, "PrometheusRule")
    [dashboard] = [
        c for c in of_kind(production_objects, "ConfigMap") if "dashboard" in c["metadata"]["name"]
    ]

    assert len(monitors) == len(chart_services()) + 1  # every service and the operator
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"][0]["rules"][0]["alert"] == "OmnistockChartTestAlert"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["omnistock-test.json"])["title"] == "omnistock chart test"
    # No rule files and no dashboards: nothing rendered for them.
    bare = chart_with_monitoring_files.parent / "bare"
    shutil.copytree(chart_with_monitoring_files, bare / "omnistock")
    shutil.rmtree(bare / "omnistock" / "files" / "prometheus")
    shutil.rmtree(bare / "omnistock" / "files" / "grafana")
    rendered = render(chart=bare / "omnistock", values=[DEFAULT_VALUES])
    assert not of_kind(rendered, "PrometheusRule")
    assert not [c for c in of_kind(rendered, "ConfigMap") if "dashboard" in c["metadata"]["name"]]
    assert of_kind(rendered, "ServiceMonitor")


def test_a_whole_environment_from_one_chart(objects: dict[str, list[dict[str, Any]]]) -> None:
    rendered = objects["in-cluster-values"]
    [kafka] = of_kind(rendered, "Kafka")
    [pool] = of_kind(rendered, "KafkaNodePool")
    [cluster] = of_kind(rendered, "Cluster")
    databases = {d["spec"]["name"] for d in of_kind(rendered, "Database")}

    assert pool["spec"]["replicas"] == 3
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    assert cluster["spec"]["instances"] == 3
    assert databases == {f"omnistock_{s.replace('-', '_')}" for s in chart_services()}
    deployments = of_kind(rendered, "Deployment")
    for deployment in deployments:
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["KAFKA_BOOTSTRAP_SERVERS"]["value"] == "omnistock-kafka-kafka-bootstrap:9092"


def test_helm_test_asks_every_service(default_objects: list[dict[str, Any]]) -> None:
    [pod] = of_kind(default_objects, "Pod")
    urls = pod["spec"]["containers"][0]["args"][1:]

    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert sorted(urls) == sorted(
        f"http://omnistock-{s}:{port}/readyz"
        for s, port in ((s, _port(default_objects, s)) for s in chart_services())
    )


def _port(objects: list[dict[str, Any]], service: str) -> int:
    name = f"omnistock-{service}"
    [svc] = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == name]
    return int(svc["spec"]["ports"][0]["port"])


def test_uninstall_drains_topics_while_the_operator_still_runs(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    rendered = objects["dev-values"]  # topics with deletionPolicy Delete: finalizers
    [job] = of_kind(rendered, "Job")
    [operator] = [d for d in of_kind(rendered, "Deployment") if "operator" in d["metadata"]["name"]]
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    selector = dict(pair.split("=") for pair in env["DRAIN_SELECTOR"].split(","))
    hook_rbac = [
        o
        for o in rendered
        if o["kind"] in ("Role", "RoleBinding", "ServiceAccount")
        and o["metadata"].get("annotations", {}).get("helm.sh/hook") == "pre-delete"
    ]

    # A pre-delete hook runs before helm deletes anything, the operator included (it is
    # no hook), so each KafkaTopic's finalizer is handled; only then does Helm go on.
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    assert "helm.sh/hook" not in operator["metadata"].get("annotations", {})
    assert container["command"] == ["python", "-m", "omnistock.topic_operator.drain"]
    assert container["image"] == operator["spec"]["template"]["spec"]["containers"][0]["image"]
    # Its RBAC exists before it runs (lower weight), and allows exactly what it does.
    assert {o["kind"] for o in hook_rbac} == {"Role", "RoleBinding", "ServiceAccount"}
    for obj in hook_rbac:
        assert int(obj["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            job["metadata"]["annotations"]["helm.sh/hook-weight"]
        )
    [role] = [o for o in hook_rbac if o["kind"] == "Role"]
    assert role["rules"] == [
        {"apiGroups": ["omnistock.io"], "resources": ["kafkatopics"], "verbs": ["list", "delete"]}
    ]
    # The selector is exactly the chart's KafkaTopics.
    topics = of_kind(rendered, "KafkaTopic")
    assert topics
    for topic in topics:
        assert topic["spec"]["deletionPolicy"] == "Delete"
        assert selector.items() <= topic["metadata"]["labels"].items()
    for obj in rendered:
        if obj["kind"] not in ("KafkaTopic",) and not obj["metadata"].get("annotations", {}).get(
            "helm.sh/hook"
        ):
            assert not selector.items() <= obj["metadata"]["labels"].items(), obj["metadata"]
