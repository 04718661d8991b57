"""components/serving: the InferenceService validates against the CRD of every KServe release docs/operators.md
names, each release's controller resolves its deployment mode to Standard (a Deployment, no Knative), and it runs
`acgan serve` beside the pipeline's pods, with their store wiring and their GPU pool."""

import gzip
import hashlib
from pathlib import Path

import jsonschema
import pytest
import yaml

from acgan.cluster_settings import ClusterSettings
from pipelines.acgan_ensemble import STORE_ACCESS_LABEL
from pipelines.runs import compile_pipeline
from tests.deploy.conftest import MANIFESTS, OVERLAYS, objects

SCHEMAS = Path(__file__).parent / "schemas"
# KServe's InferenceService CRD as kserve/kserve publishes it, config/crd/full/serving.kserve.io_inferenceservices.yaml
# at each tag, vendored gzipped: the schema the cluster's API server checks an InferenceService against. v0.17.0's
# bytes are also v0.17.1's, v0.18.0's, v0.18.1's and v0.19.0's; v0.20.0's are also those of the newest commit we
# could read (aaac4e2 of 2026-08-21, before a 0.21 tag). Release -> (vendored file, sha256 of the CRD as published).
KSERVE_CRDS = {
    "0.16": ("serving.kserve.io_inferenceservices-v0.16.0.yaml.gz",
             "7b57068f8bb0baa394c14bef83421a53a7be8e13335c31a4e55e32d9f549adb0"),
    "0.17-0.19": ("serving.kserve.io_inferenceservices-v0.17.0.yaml.gz",
                  "b6c30a83b771f791e5de3a30d46ddd2f44e3caeffdc8c132e7c8c145ab209dae"),
    "0.20": ("serving.kserve.io_inferenceservices-v0.20.0.yaml.gz",
             "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff"),
}
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"  # pkg/constants: KServeAPIGroupName + "/deploymentMode"


def resolved_mode(release: str, annotation: str | None) -> str:
    """The mode KServe's controller gives a new InferenceService from its annotation: GetDeploymentMode in
    pkg/controller/v1beta1/inferenceservice/utils/utils.go. At v0.15.2 only Serverless, RawDeployment and ModelMesh
    are taken and anything else falls to the configured default, which config/configmap/inferenceservice.yaml ships
    as Serverless (Knative). From v0.16.0 to v0.20.0 the legacy names are normalised (RawDeployment -> Standard,
    Serverless -> Knative; pkg/constants DeploymentModeType) and Standard, Knative and ModelMesh are taken; the
    shipped default is still "Serverless"."""
    if release == "0.15":
        return annotation if annotation in ("Serverless", "RawDeployment", "ModelMesh") else "Serverless"
    mode = {"RawDeployment": "Standard", "Serverless": "Knative"}.get(annotation, annotation)
    return mode if mode in ("Standard", "Knative", "ModelMesh") else "Serverless"


def closed(schema):
    """A CRD's structural schema with unknown fields rejected where it lists the fields (what `kubectl apply`'s
    strict field validation does; the API server would otherwise drop them silently)."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) if k != "properties" else {name: closed(s) for name, s in v.items()} for k, v in schema.items()}
    listed = "properties" in out and "additionalProperties" not in out
    if listed and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module", params=sorted(KSERVE_CRDS))
def inference_service_validator(request):
    name, sha256 = KSERVE_CRDS[request.param]
    raw = gzip.decompress((SCHEMAS / name).read_bytes())
    assert hashlib.sha256(raw).hexdigest() == sha256  # the file as published
    crd = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = crd["spec"]["versions"]
    assert (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"]) == (
        "serving.kserve.io", "v1beta1", "InferenceService")
    return jsonschema.Draft4Validator(closed(version["schema"]["openAPIV3Schema"]))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    path = compile_pipeline(ClusterSettings(), tmp_path_factory.mktemp("compiled") / "acgan-ensemble.yaml")
    _, platform = yaml.safe_load_all(path.read_text())
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_inference_service_validates_against_each_named_release(rendered, inference_service_validator, overlay):
    (service,) = objects(rendered[f"{overlay}+serving"], "InferenceService").values()
    inference_service_validator.validate(service)
    # The check itself: a misspelt field and a wrong type are refused.
    misspelt = yaml.safe_load(yaml.safe_dump(service))
    misspelt["spec"]["predictor"]["containers"][0]["readinessprobe"] = {}
    wrong = yaml.safe_load(yaml.safe_dump(service))
    wrong["spec"]["predictor"]["minReplicas"] = "one"
    for bad in (misspelt, wrong):
        assert not inference_service_validator.is_valid(bad)


def test_each_named_release_deploys_it_in_standard_mode(rendered):
    """Standard (a Deployment, a Service and an HPA) on every release named, whatever the cluster's default; 0.15,
    not named, would take the unknown name for its default and create a Knative Service instead."""
    (service,) = objects(rendered["standalone+serving"], "InferenceService").values()
    annotation = service["metadata"]["annotations"][DEPLOYMENT_MODE]
    for release in ("0.16", "0.17", "0.18", "0.19", "0.20"):
        assert resolved_mode(release, annotation) == "Standard", release
    assert resolved_mode("0.15", annotation) == "Serverless"
    operators = (MANIFESTS.parent / "docs" / "operators.md").read_text()
    assert "KServe 0.16 to 0.20" in operators and "kserve/kserve" in operators


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_inference_service_runs_acgan_serve_beside_the_pipeline(rendered, compiled, overlay):
    """`acgan serve` in the project's image with arguments our CLI accepts, listening where the probes and the
    Service look; the store's Secret and ConfigMap the pipeline uses, in the same namespace; the GPU pool the training
    task selects and tolerates; a GPU the namespace's quota leaves room for beside a full run."""
    from acgan.settings import ServeSettings
    from acgan_cli.main import build_parser

    cluster = ClusterSettings()
    docs = rendered[f"{overlay}+serving"]
    (service,) = objects(docs, "InferenceService").values()
    assert service["metadata"]["namespace"] == objects(docs, "Secret")[cluster.store_secret]["metadata"]["namespace"]
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["image"] == cluster.image
    args = build_parser().parse_args(container["args"])
    settings = ServeSettings.model_validate({k: v for k, v in vars(args).items()
                                             if k in ServeSettings.model_fields and v is not None})
    assert settings.store.startswith("s3://") and settings.host == "0.0.0.0" and settings.device == "cuda"
    (port,) = container["ports"]
    assert port["containerPort"] == settings.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == settings.port
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    sources = {next(iter(s)): s[next(iter(s))]["name"] for s in container["envFrom"]}
    assert sources == {"secretRef": cluster.store_secret, "configMapRef": cluster.store_config_map}
    assert set(objects(docs, "Secret")[cluster.store_secret]["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "ACGAN_S3_ENDPOINT" in objects(docs, "ConfigMap")[cluster.store_config_map]["data"]
    train = compiled["exec-train-split"]
    assert predictor["nodeSelector"] == train["nodeSelector"]["labels"]
    assert [(t["key"], t["operator"], t["effect"]) for t in predictor["tolerations"]] == [
        (t["key"], t["operator"], t["effect"]) for t in train["tolerations"]]
    assert predictor["labels"][STORE_ACCESS_LABEL[0]] == STORE_ACCESS_LABEL[1]
    gpus = container["resources"]["requests"]["nvidia.com/gpu"]
    assert gpus == container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    quota = int(objects(docs, "ResourceQuota")["acgan-gpu"]["spec"]["hard"]["requests.nvidia.com/gpu"])
    assert quota >= cluster.parallelism * cluster.gpus_per_task + predictor["maxReplicas"] * int(gpus)
    assert predictor["securityContext"]["runAsNonRoot"] and not container["securityContext"]["allowPrivilegeEscalation"]
