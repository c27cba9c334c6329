"""The KubeRay manifests and the Dockerfile carry what KubeRay and our app need."""

import yaml

from orchestrator.config import ServeArgs
from tests.conftest import ROOT

KUBERAY = ROOT / "deploy" / "kuberay"


def load(name):
    return yaml.safe_load((KUBERAY / name).read_text())


def check_cluster(spec: dict, gpu_group: str = "gpu"):
    """KubeRay's required RayCluster fields, token auth, and GPU requests on the workers."""
    assert spec["rayVersion"] == "2.60.0" and spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and head["template"]["spec"]["containers"]
    for container in head["template"]["spec"]["containers"]:
        assert container["image"] and container["resources"]["limits"]
    assert "dashboard-host" not in head["rayStartParams"] or head["rayStartParams"]["dashboard-host"] != "0.0.0.0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = groups[gpu_group]
    assert isinstance(gpu["rayStartParams"], dict) and gpu["minReplicas"] <= gpu["maxReplicas"]
    for container in gpu["template"]["spec"]["containers"]:
        assert container["image"] and int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1


def test_rayjob_trains_with_the_project_cli():
    job = load("rayjob-train.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob") and job["metadata"]["name"]
    assert job["spec"]["entrypoint"].startswith("python -m orchestrator.cli train jobs/")
    assert (ROOT / job["spec"]["entrypoint"].split()[4]).exists()  # the config it names ships in the image
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    check_cluster(job["spec"]["rayClusterSpec"])


def test_rayservice_serves_a_valid_serve_config():
    from ray.serve.schema import ServeDeploySchema

    service = load("rayservice-serve.yaml")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    app = serve_config.applications[0]
    assert app.import_path == "orchestrator.serve:build_app"
    args = ServeArgs.model_validate(app.args)  # the app builder's own validation
    assert args.auth == "required" and args.num_gpus > 0
    check_cluster(service["spec"]["rayClusterConfig"])
    envs = [e["name"] for e in service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]]
    assert "ORCHESTRATOR_API_KEYS" in envs


def test_deploy_serve_yaml_is_a_valid_serve_config():
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text()))
    assert config.http_options.host == "127.0.0.1" and config.http_options.request_timeout_s
    ServeArgs.model_validate(config.applications[0].args)


def test_dockerfile_installs_the_project_and_runs_unprivileged():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "pip install" in text and "COPY orchestrator" in text and "\nUSER ray" in text
