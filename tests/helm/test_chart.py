"""The Helm chart (charts/gatehouse), offline: `helm lint --strict` and
rendering with the default and HA values through helm-python-sdk (Helm's
own Go SDK, no cluster, no helm binary), with assertions on the rendered
manifests, and the generated gatehouse.toml checked by the real binary
(`gatehouse check --role hostd`).

Run by scripts/test.sh; by hand:
    python3 -m pip install helm-python-sdk==0.2.2 pyyaml
    cargo build -p gatehouse && python3 -m unittest discover -s tests/helm -v
"""

import base64
import os
import re
import subprocess
import tempfile
import unittest

import helm_python as helm
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "charts", "gatehouse")
GATEHOUSE = os.environ.get(
    "GATEHOUSE_BIN", os.path.join(ROOT, "target", "debug", "gatehouse")
)
ROLES = ("edge", "hostd", "ingest", "api")
TLS = {"tls": {"existingSecret": "gh-tls"}}


def merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def ha_values(extra=None):
    with open(os.path.join(CHART, "values-ha.yaml")) as f:
        v = helm.values_from_yaml(f.read())
    return merge(merge(v, TLS), extra or {})


def render(values, name="gh"):
    chart = helm.Chart.load(CHART)
    out = chart.render(values, name=name, namespace="fleet", is_install=True)
    docs = []
    for path, text in out.items():
        if not path.endswith(".yaml"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                d["_template"] = path
                docs.append(d)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def deployments(docs):
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in by_kind(docs, "Deployment")}


def config_toml(docs):
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config")]
    return cm["data"]["gatehouse.toml"]


def external_secrets(values):
    """Secrets the values declare as existing (created outside the chart)."""
    names = set()

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "existingSecret" and x:
                    names.add(x)
                else:
                    walk(x)

    walk(values)
    return names


class Lint(unittest.TestCase):
    def lint(self, values):
        report = helm.lint(CHART, values, strict=True, kube_version="v1.30.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        self.assertEqual(problems, [], report)
        self.assertEqual(report.get("errors") or [], [], report)

    def test_default_values_lint_strict(self):
        self.lint(TLS)

    def test_ha_values_lint_strict(self):
        self.lint(ha_values())

    def test_every_option_enabled_lints_strict(self):
        self.lint(
            ha_values(
                {
                    "edge": {"autoscaling": {"targetRequestsPerSecond": 400}},
                    "ingest": {"autoscaling": {"targetLagBatches": "1000"}},
                    "api": {"ingress": {"enabled": True, "className": "nginx", "tlsSecret": "api-tls"}},
                    "tls": {"clientCA": {"existingSecret": "agents-ca"}},
                    "scylla": {"auth": {"existingSecret": "scylla-creds"}, "tls": {"existingSecret": "scylla-ca"}},
                    "nats": {"auth": {"existingSecret": "nats-creds"}},
                    "secrets": {"existingSecret": "gh-keys"},
                }
            )
        )

    def test_bundled_dependencies_lint_strict(self):
        self.lint(merge(TLS, {"nats": {"enabled": True}, "scylla": {"enabled": True}}))

    def test_only_public_host_lints_strict(self):
        self.lint({"publicHost": "fleet.corp.example"})

    def test_the_schema_rejects_bad_values(self):
        chart = helm.Chart.load(CHART)
        chart.validate_schema(TLS)
        for bad in (
            {"edge": {"replicas": "two"}},
            {"podAntiAffinity": "maybe"},
            {"edeg": {"replicas": 2}},
            {"nats": {"url": "http://nats:4222"}},
            {"nats": {"streamReplicas": 2}},
            {"scylla": {"contactPoints": ["no-port"]}},
            {"limits": {"max_campaign_targets": -1}},
            {"hostd": {"pdb": {"maxUnavailable": "half"}}},
        ):
            with self.subTest(bad=bad), self.assertRaises(helm.HelmValuesError):
                chart.validate_schema(merge(TLS, bad))


class Manifests(unittest.TestCase):
    def check_workloads(self, values):
        docs = render(values)
        deps = deployments(docs)
        self.assertEqual(sorted(deps), sorted(ROLES))
        created = {d["metadata"]["name"] for d in docs if d["kind"] in ("Secret", "ConfigMap")}
        external = external_secrets(values)
        for role, d in deps.items():
            pod = d["spec"]["template"]
            spec = pod["spec"]
            # Configuration changes roll the pods.
            self.assertRegex(pod["metadata"]["annotations"]["checksum/config"], r"^[0-9a-f]{64}$")
            # Nobody runs as root, nothing is writable but volumes.
            psc = spec["securityContext"]
            self.assertTrue(psc["runAsNonRoot"], role)
            self.assertNotEqual(psc.get("runAsUser"), 0, role)
            for c in spec["containers"]:
                sc = c["securityContext"]
                self.assertTrue(sc["runAsNonRoot"], role)
                self.assertNotEqual(sc.get("runAsUser"), 0, role)
                self.assertFalse(sc["allowPrivilegeEscalation"], role)
                self.assertTrue(sc["readOnlyRootFilesystem"], role)
                self.assertIn("ALL", sc["capabilities"]["drop"], role)
                # Probes on named ports that the container declares.
                ports = {p["name"] for p in c["ports"]}
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    port = c[probe]["httpGet"]["port"]
                    self.assertIsInstance(port, str, f"{role} {probe}")
                    self.assertIn(port, ports, f"{role} {probe}")
                self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/livez")
                self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
                self.assertEqual(c["args"][0], role)
                # Every referenced Secret exists or is declared external.
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        self.assertIn(ref["name"], created | external, f"{role} env {e['name']}")
            self.assertEqual(psc["fsGroup"], psc["runAsGroup"], role)
            for v in spec["volumes"]:
                if "secret" in v and "defaultMode" in v["secret"]:
                    # Readable by the pod's group, never by others.
                    self.assertEqual(v["secret"]["defaultMode"] & 0o007, 0, role)
                if "secret" in v:
                    self.assertIn(v["secret"]["secretName"], created | external, f"{role} volume {v['name']}")
                if "configMap" in v:
                    self.assertIn(v["configMap"]["name"], created, f"{role} volume {v['name']}")
        # hostd hands shards over one pod at a time, with time to do it.
        hostd = deps["hostd"]
        self.assertGreaterEqual(hostd["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 60)
        self.assertEqual(hostd["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 1)
        # The agent Service passes TLS through to the edge's named port.
        (edge_svc,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-edge")]
        self.assertEqual(edge_svc["spec"]["ports"][0]["targetPort"], "agents")
        return docs

    def test_default_values(self):
        docs = self.check_workloads(TLS)
        pdbs = {p["metadata"]["name"] for p in by_kind(docs, "PodDisruptionBudget")}
        self.assertEqual(pdbs, {"gh-gatehouse-hostd"})
        self.assertEqual(by_kind(docs, "HorizontalPodAutoscaler"), [])
        self.assertEqual(by_kind(docs, "ServiceMonitor"), [])
        # The chart creates the shared keys, kept when the release goes.
        (secret,) = by_kind(docs, "Secret")
        self.assertEqual(sorted(secret["data"]), ["admin_token", "enroll_secret", "node_key_secret"])
        self.assertEqual(secret["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")

    def test_only_public_host_generates_a_ca_and_certificate(self):
        docs = self.check_workloads({"publicHost": "fleet.corp.example"})
        (tls,) = [d for d in by_kind(docs, "Secret") if d["type"] == "kubernetes.io/tls"]
        self.assertEqual(tls["metadata"]["name"], "gh-gatehouse-tls")
        self.assertEqual(sorted(tls["data"]), ["ca.crt", "tls.crt", "tls.key"])
        # Agents trust the CA: it must survive upgrades and uninstall.
        self.assertEqual(tls["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")
        # The edge and api mount it.
        for role in ("edge", "api"):
            vols = deployments(docs)[role]["spec"]["template"]["spec"]["volumes"]
            self.assertIn("gh-gatehouse-tls", [v.get("secret", {}).get("secretName") for v in vols], role)
        with tempfile.TemporaryDirectory() as d:
            paths = {}
            for key in ("ca.crt", "tls.crt"):
                paths[key] = os.path.join(d, key)
                with open(paths[key], "wb") as f:
                    f.write(base64.b64decode(tls["data"][key]))
            # The certificate names publicHost and chains to the CA.
            text = subprocess.run(
                ["openssl", "x509", "-in", paths["tls.crt"], "-noout", "-ext", "subjectAltName"],
                check=True, capture_output=True, text=True,
            ).stdout
            self.assertIn("DNS:fleet.corp.example", text)
            verify = subprocess.run(
                ["openssl", "verify", "-CAfile", paths["ca.crt"], paths["tls.crt"]],
                capture_output=True, text=True,
            )
            self.assertEqual(verify.returncode, 0, verify.stdout + verify.stderr)

    def test_cert_manager_issues_the_certificate_when_asked(self):
        docs = render({"publicHost": "fleet.corp.example", "tls": {"certManager": {"issuerRef": {"name": "corp-ca"}}}})
        self.assertEqual([d for d in by_kind(docs, "Secret") if d["type"] == "kubernetes.io/tls"], [])
        (cert,) = by_kind(docs, "Certificate")
        self.assertEqual(cert["spec"]["secretName"], "gh-gatehouse-tls")
        self.assertEqual(cert["spec"]["dnsNames"], ["fleet.corp.example"])
        self.assertEqual(cert["spec"]["issuerRef"], {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})

    def test_an_existing_certificate_secret_is_used_as_is(self):
        docs = render(TLS)
        self.assertEqual([d for d in by_kind(docs, "Secret") if d["type"] == "kubernetes.io/tls"], [])
        self.assertEqual(by_kind(docs, "Certificate"), [])
        vols = deployments(docs)["edge"]["spec"]["template"]["spec"]["volumes"]
        self.assertIn("gh-tls", [v.get("secret", {}).get("secretName") for v in vols])

    def test_ha_values(self):
        docs = self.check_workloads(ha_values())
        pdbs = {p["metadata"]["name"] for p in by_kind(docs, "PodDisruptionBudget")}
        self.assertEqual(pdbs, {f"gh-gatehouse-{r}" for r in ROLES})
        hpas = {h["metadata"]["name"] for h in by_kind(docs, "HorizontalPodAutoscaler")}
        self.assertEqual(hpas, {"gh-gatehouse-edge", "gh-gatehouse-hostd", "gh-gatehouse-ingest"})
        for d in deployments(docs).values():
            # Autoscaled: the HPA owns the replica count.
            spec = d["spec"]
            if d["metadata"]["name"] in hpas:
                self.assertNotIn("replicas", spec)
            aff = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
            self.assertIn("requiredDuringSchedulingIgnoredDuringExecution", aff)
            spread = spec["template"]["spec"]["topologySpreadConstraints"]
            self.assertEqual(spread[0]["topologyKey"], "topology.kubernetes.io/zone")
        (sm,) = by_kind(docs, "ServiceMonitor")
        self.assertEqual(sm["spec"]["endpoints"][0]["port"], "ops")
        (ops,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-ops")]
        self.assertEqual(ops["spec"]["ports"][0]["name"], "ops")

    def test_autoscaling_on_requests_and_lag(self):
        docs = render(
            merge(
                TLS,
                {
                    "edge": {"autoscaling": {"enabled": True, "targetRequestsPerSecond": 400}},
                    "ingest": {"autoscaling": {"enabled": True, "targetLagBatches": 1000}},
                    "hostd": {"autoscaling": {"enabled": True}},
                },
            )
        )
        hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind(docs, "HorizontalPodAutoscaler")}
        self.assertEqual(set(hpas), {"gh-gatehouse-edge", "gh-gatehouse-ingest", "gh-gatehouse-hostd"})
        kinds = lambda h: {m["type"] for m in h["spec"]["metrics"]}
        self.assertEqual(kinds(hpas["gh-gatehouse-edge"]), {"Resource", "Pods"})
        self.assertEqual(kinds(hpas["gh-gatehouse-ingest"]), {"Resource", "External"})
        self.assertEqual(kinds(hpas["gh-gatehouse-hostd"]), {"Resource"})
        ext = [m for m in hpas["gh-gatehouse-ingest"]["spec"]["metrics"] if m["type"] == "External"][0]
        self.assertEqual(ext["external"]["metric"]["name"], "gatehouse_ingest_lag_batches")

    def test_a_config_change_changes_the_checksum(self):
        a = deployments(render(TLS))["edge"]
        b = deployments(render(merge(TLS, {"publicHost": "fleet.example.org"})))["edge"]
        key = lambda d: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        self.assertNotEqual(key(a), key(b))

    def test_bundled_dependencies_for_development(self):
        docs = render(merge(TLS, {"nats": {"enabled": True}, "scylla": {"enabled": True}}))
        sets = {s["metadata"]["name"] for s in by_kind(docs, "StatefulSet")}
        self.assertEqual(sets, {"gh-nats", "gh-scylla"})
        toml = config_toml(docs)
        self.assertIn('servers = ["nats://gh-nats:4222"]', toml)
        self.assertIn('contact_points = ["gh-scylla:9042"]', toml)


class GeneratedConfig(unittest.TestCase):
    """The gatehouse.toml the chart generates is accepted by the binary."""

    def check(self, values):
        toml = config_toml(render(values))
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(toml)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
            r = subprocess.run(
                [GATEHOUSE, "check", "--role", "hostd", "--config", f.name],
                capture_output=True,
                text=True,
                env=env,
            )
        finally:
            os.unlink(f.name)
        self.assertEqual(r.returncode, 0, f"{r.stderr}\n--- generated:\n{toml}")
        return r.stdout

    def test_default_config(self):
        out = self.check(TLS)
        self.assertIn('kind = "scylla"', out)

    def test_ha_config_with_overrides(self):
        out = self.check(
            ha_values(
                {
                    "limits": {"max_campaign_targets": 5000, "max_in_flight_requests": 8192},
                    "extraConfig": '[store.scylla.consistency]\nlogs = "local_one"\n',
                    "tls": {"clientCA": {"existingSecret": "agents-ca"}},
                    "scylla": {"tls": {"existingSecret": "scylla-ca"}},
                }
            )
        )
        self.assertIn("max_campaign_targets = 5000", out)
        self.assertRegex(out, r'logs = "local_one"')
        self.assertRegex(out, r"dc1 = 3")
        self.assertIn("/etc/gatehouse/client-ca/ca.pem", out)
        self.assertIn("/etc/gatehouse/scylla-ca/ca.pem", out)
        self.assertIn("replicas = 3", out)

    def test_a_broken_extra_config_is_refused(self):
        with self.assertRaises(AssertionError):
            self.check(merge(TLS, {"extraConfig": "[limits]\nmax_body_bytes = 1\n"}))


if __name__ == "__main__":
    unittest.main()
