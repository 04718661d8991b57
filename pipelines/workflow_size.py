"""How large the Argo Workflow of a run grows, by Argo's and KFP's rules, so that `acgan submit` and `acgan rerun`
refuse a run whose workflow Argo could not store.

Argo keeps every node's status in the Workflow object. When the object's JSON is over MAX_WORKFLOW_SIZE (1 MiB unless
the controller's environment sets it: argo-workflows v4.0.5, workflow/packer/packer.go, getMaxWorkflowSize), the
controller replaces `status.nodes` with `status.compressedNodes`, the nodes' JSON gzipped and base64-encoded
(packer.go, compressWorkflow; util/file/fileutil.go, CompressEncodeString), and when that is still too large it
offloads the node status to its database (workflow/hydrator/hydrator.go, Dehydrate). Without persistence configured,
KFP's install, the offload repository is persist.ExplosiveOffloadNodeStatusRepo, which refuses: the workflow is
marked Error (operator.go, persistUpdates -> markWorkflowError) and every running pod is left to itself.

The nodes per split come from KFP 2.17.0's Argo compiler (backend/src/v2/compiler/argocompiler): an iteration is the
`iteration-iterations(i)` DAG task, its `iteration-item-driver` pod and its `iteration-item` DAG (dag.go,
iterationItemTask); each container task of the loop body is a driver pod, an executor DAG and the executor's pod
(container.go, containerDriverTask, addContainerExecutorTemplate). Every one of these templates has a retryStrategy
(KFP's templateDefaults, or the task's own set_retry), so each node sits under a Retry node (operator.go,
executeTemplate): two nodes each. A node's JSON is made here as Argo writes a NodeStatus, with the parameters KFP's
templates pass (the driver's component, task, container and Kubernetes config, the pod spec patch it outputs) filled
from the compiled spec; the estimate is the size of the nodes of every split, gzipped and base64-encoded, plus the
compiled spec, which the Workflow holds in its arguments and templates.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json

MAX_WORKFLOW_SIZE = 1024 * 1024  # workflow/packer/packer.go, getMaxWorkflowSize's default
NODES_PER_TEMPLATE = 2  # a Retry node and its attempt
ITERATION_TEMPLATES = 3  # iteration-iterations(i), iteration-item-driver, iteration-item (argocompiler/dag.go)
CONTAINER_TEMPLATES = 3  # the task's driver, its executor DAG and the executor's pod (argocompiler/container.go)


def loop_body(spec: dict) -> tuple[str, dict]:
    """The ParallelFor over the class splits: its component's name and component (the first loop of the spec)."""
    for component in [spec["root"], *spec["components"].values()]:
        for task in component.get("dag", {}).get("tasks", {}).values():
            if "parameterIterator" in task:
                name = task["componentRef"]["name"]
                return name, spec["components"][name]
    raise ValueError("the compiled pipeline has no ParallelFor")


def nodes_per_split(spec: dict) -> int:
    """Argo nodes one iteration of the loop over the splits makes."""
    _, body = loop_body(spec)
    containers = len(body["dag"]["tasks"])
    return NODES_PER_TEMPLATE * (ITERATION_TEMPLATES + CONTAINER_TEMPLATES * containers)


def _node(workflow: str, path: str, template: str, kind: str, children: list[str], inputs: dict,
          outputs: dict) -> tuple[str, dict]:
    """One NodeStatus as Argo serialises it (pkg/apis/workflow/v1alpha1/workflow_types.go, NodeStatus)."""
    name = f"{workflow}.{path}"
    node_id = f"{workflow}-{int(hashlib.sha256(name.encode()).hexdigest()[:8], 16):010d}"
    node = {"id": node_id, "name": name, "displayName": path.rsplit(".", 1)[-1], "type": kind,
            "templateName": template, "templateScope": "local/", "phase": "Succeeded",
            "boundaryID": f"{workflow}-{int(hashlib.sha256(path.encode()).hexdigest()[8:16], 16):010d}",
            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T01:00:00Z", "progress": "1/1",
            "resourcesDuration": {"cpu": 3600, "memory": 3600, "nvidia.com/gpu": 3600}, "children": children}
    if inputs:
        node["inputs"] = {"parameters": [{"name": k, "value": v} for k, v in inputs.items()]}
    if kind == "Pod":
        node["hostNodeName"] = "ip-10-0-0-1.ec2.internal"
        logs = {"name": "main-logs", "s3": {"key": f"artifacts/{workflow}/{node_id}/main.log"}}
        node["outputs"] = {"parameters": [{"name": k, "value": v} for k, v in outputs.items()], "artifacts": [logs],
                           "exitCode": "0"}
    return node_id, node


def split_nodes(spec: dict, platform: dict, workflow: str, split: int, passes: str) -> list[dict]:
    """The nodes of one split's iteration, their inputs and outputs as KFP's templates pass them."""
    loop_name, body = loop_body(spec)
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    base = f"{passes}.iteration-iterations({split}:{split})"
    nodes = []

    def add(path: str, template: str, kind: str, inputs: dict | None = None, outputs: dict | None = None) -> None:
        _, attempt = _node(workflow, f"{path}(0)", template, kind, [], inputs or {}, outputs or {})
        _, retry = _node(workflow, path, template, "Retry", [attempt["id"]], {}, {})
        nodes.extend([retry, attempt])

    add(base, f"{loop_name}-iteration", "DAG", {"parent-dag-id": "1234", "iteration-index": str(split)})
    add(f"{base}.iteration-item-driver", "system-dag-driver", "Pod",
        {"component": json.dumps(body), "parent-dag-id": "1234", "iteration-index": str(split)},
        {"execution-id": "123456", "condition": "true"})
    add(f"{base}.iteration-item", loop_name, "DAG", {"parent-dag-id": "123456"})
    for task_name, task in body["dag"]["tasks"].items():
        component = spec["components"][task["componentRef"]["name"]]
        label = component["executorLabel"]
        container = executors[label]["container"]
        executor_input = {"inputs": {"parameterValues": {"split": split, "store": "s3://bucket/experiment"}},
                          "outputs": {"outputFile": f"/tmp/kfp_outputs/{task_name}/{split}/output_metadata.json"}}
        patch = json.dumps({"containers": [{"name": "main", "image": container["image"],
                                            "command": container["command"],
                                            "args": ["--executor_input", json.dumps(executor_input),
                                                     *container.get("args", [])],
                                            "resources": container.get("resources", {})}]})
        path = f"{base}.iteration-item.{task_name}"
        add(f"{path}-driver", "system-container-driver", "Pod",
            {"component": json.dumps(component), "task": json.dumps(task), "container": json.dumps(container),
             "task-name": task_name, "parent-dag-id": "123456", "iteration-index": "-1",
             "kubernetes-config": json.dumps(k8s.get(label, {}))},
            {"pod-spec-patch": patch, "cached-decision": "false", "condition": ""})
        add(path, "retry-system-container-executor", "DAG", {"pod-spec-patch": patch, "cached-decision": "false"})
        add(f"{path}.executor", "retry-system-container-impl", "Pod", {"pod-spec-patch": patch}, {})
    return nodes


SAMPLE_SPLITS = 64  # the splits whose nodes are compressed to measure the bytes one more split adds


def _compressed(spec: dict, platform: dict, splits: int) -> int:
    """Bytes of `status.compressedNodes` for `splits` iterations, the nodes keyed by id as Go's json.Marshal of a
    map writes them (sorted keys), so that a split's nodes are spread among the others' as in the real object."""
    workflow = "acgan-ensemble-abcde"
    nodes = {node["id"]: node for split in range(splits)
             for node in split_nodes(spec, platform, workflow, split, "root.train-pass.for-loop-1")}
    text = json.dumps(dict(sorted(nodes.items())), separators=(",", ":"))
    return len(base64.b64encode(gzip.compress(text.encode())))


def size_model(spec: dict, platform: dict, passes: int) -> tuple[int, int]:
    """(fixed bytes, bytes per split) of the run's Workflow once its nodes are compressed: the compiled spec, which
    the Workflow holds in its arguments and templates, and per split its nodes in each of `passes` passes over the
    splits (the first pass and, at worst, every split again in each heal pass). The bytes per split are measured
    on SAMPLE_SPLITS splits: gzip's window is 32 KiB, so each further split costs about the same."""
    half, full = _compressed(spec, platform, SAMPLE_SPLITS // 2), _compressed(spec, platform, SAMPLE_SPLITS)
    per_split = -(-(full - half) * passes // (SAMPLE_SPLITS // 2))
    return len(json.dumps(spec)) + len(json.dumps(platform)) + full - per_split * SAMPLE_SPLITS // passes, per_split

