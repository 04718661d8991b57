"""What Argo retries when a task of the compiled pipeline fails or its pod is deleted, by Argo's and KFP's rules as
their sources state them (argo-workflows v4.0.5, the version KFP 2.17.0's go.mod requires; kubeflow/pipelines 2.17.0):

- KFP nests each task's pod in DAG templates: the workflow's `entrypoint` and `root` (argocompiler/dag.go, DAG), per
  enclosing ParallelFor an iterator, an iteration and the loop body's own DAG (iteratorTask, iterationItemTask,
  task), and the container executor's wrapper (container.go, addContainerExecutorTemplate); `set_retry` becomes a
  retryStrategy with a limit and a backoff but no retryPolicy on the pod's template (getTaskRetryStrategyFromInput).
- Argo merges the controller's templateDefaults into every template, DAGs included, the template's own fields
  winning (workflow/controller/operator.go, mergedTemplateDefaultsInto); any template with a retryStrategy runs under
  a retry node (executeTemplate, woc.retryStrategy); processNodeRetries retries a Failed child under Always and
  OnFailure, an Errored one under Always and OnError, and no policy means OnFailure (RetryPolicyActual).
- A DAG whose target task failed or errored takes that phase (workflow/controller/dag.go, assessDAGPhase).
- A container that exits non-zero is Failed; a pod deleted under a running node is Errored ("pod deleted",
  podReconciliation) (operator.go, inferFailedReason and podReconciliation).
"""

import itertools

import pytest
import yaml

from acgan.cluster_settings import ClusterSettings
from pipelines.runs import compile_pipeline

# KFP 2.17.0's Argo configuration as it ships (manifests/kustomize/third-party/argo/base/workflow-controller-configmap-
# patch.yaml at tag 2.17.0), and the cluster-wide patch this project used to ask operators for.
KFP_2_17 = {"limit": "2", "retryPolicy": "OnError"}
ALWAYS_PATCH = {"limit": "2", "retryPolicy": "Always"}
RETRIED = {"Always": {"Failed", "Error"}, "OnError": {"Error"}, "OnFailure": {"Failed"}}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    path = compile_pipeline(ClusterSettings(), tmp_path_factory.mktemp("argo") / "acgan-ensemble.yaml")
    return next(yaml.safe_load_all(path.read_text()))


def dag_templates_above(spec: dict, task: str, hooks: bool = False) -> list[str]:
    """The DAG templates KFP's Argo compiler nests `task`'s pod in, outermost first: the first pass's, or with
    `hooks` the one under the exit tasks (an exit task is a DAG template of its own, `exit-hook-<DAG>-<task>`, which
    holds the task's driver and DAG: argocompiler/dag.go, DAG)."""
    def find(component: dict, path: list[str]) -> list[str] | None:
        for name, t in sorted(component["dag"]["tasks"].items()):
            child = spec["components"][t["componentRef"]["name"]]
            loop = ["iterator", "iteration"] if "parameterIterator" in t else []
            hook = ["exit hook"] if t.get("triggerPolicy", {}).get("strategy") == "ALL_UPSTREAM_TASKS_COMPLETED" else []
            if hook and not hooks:
                continue
            if name == task:
                return path + loop + hook + ["container executor"]
            if "dag" in child:
                found = find(child, path + loop + hook + [t["componentRef"]["name"]])
                if found:
                    return found
        return None
    return find(spec["root"], ["entrypoint", "root"])


def strategy(own: dict | None, defaults: dict | None) -> dict | None:
    """The template's retryStrategy after mergedTemplateDefaultsInto: the defaults under the template's own fields."""
    return {**(defaults or {}), **(own or {})} if (own or defaults) else None


def pods_run(levels: int, pod_retry: dict | None, defaults: dict | None, outcomes) -> tuple[int, str]:
    """Pods started before the outermost node settles, and its phase: `levels` DAG templates above the pod, each
    a retry node when it has a retryStrategy, the pod's attempts ending as `outcomes` yields."""
    started = 0

    def run(level: int) -> str:
        nonlocal started
        retry = strategy(pod_retry, defaults) if level == levels else strategy(None, defaults)
        attempts = 1 + (int(retry["limit"]) if retry else 0)
        policy = (retry or {}).get("retryPolicy") or "OnFailure"
        for _ in range(attempts):
            if level == levels:
                started += 1
                phase = next(outcomes)
            else:
                phase = run(level + 1)
            if phase == "Succeeded" or phase not in RETRIED[policy]:
                return phase
        return phase

    phase = run(0)
    return started, phase


def compiled_pod_retry(spec: dict, task: str) -> dict:
    """The retryStrategy KFP compiles a task's retryPolicy into: a limit and a backoff, no policy."""
    tasks = {k: t for c in [spec["root"], *spec["components"].values()] if "dag" in c for k, t in c["dag"]["tasks"].items()}
    policy = tasks[task]["retryPolicy"]
    assert "retryPolicy" not in policy  # the IR has no field for it
    return {"limit": str(policy["maxRetryCount"]), "backoff": {"duration": policy["backoffDuration"]}}


def test_kfp_nests_a_training_pod_in_seven_dag_templates_and_ten_in_a_heal_pass(compiled):
    assert dag_templates_above(compiled, "train-split") == [
        "entrypoint", "root", "comp-train-pass", "iterator", "iteration", "comp-for-loop-1", "container executor"]
    healing = dag_templates_above(compiled, "train-split", hooks=True)
    assert healing[:4] == ["entrypoint", "root", "exit hook", "comp-heal-1"] and healing[4].startswith("comp-condition")
    assert healing[5:] == ["comp-train-pass-2", "iterator", "iteration", "comp-for-loop-1-2", "container executor"]
    assert len(dag_templates_above(compiled, "assemble-ensemble")) == 3


def test_on_stock_kfp_a_failing_training_pod_runs_once(compiled):
    """A trainer that fails past its in-pod restarts fails its task: OnError does not retry a Failed pod, at any
    level, so a failure that repeats costs one pod, not a storm."""
    levels = len(dag_templates_above(compiled, "train-split"))
    pods, phase = pods_run(levels, compiled_pod_retry(compiled, "train-split"), KFP_2_17, itertools.repeat("Failed"))
    assert (pods, phase) == (1, "Failed")


def test_on_stock_kfp_a_deleted_training_pod_is_retried_by_its_own_template(compiled):
    levels = len(dag_templates_above(compiled, "train-split"))
    pods, phase = pods_run(levels, compiled_pod_retry(compiled, "train-split"), KFP_2_17,
                           iter(["Error", "Succeeded"]))
    assert (pods, phase) == (2, "Succeeded")


def test_what_a_pod_deleted_on_every_attempt_costs_on_stock_kfp(compiled):
    """The stock OnError default reaches the DAG templates too: once the pod's own retries are spent the Error climbs,
    and each level retries its whole subtree (docs/operators.md, section 5, states this figure)."""
    levels = len(dag_templates_above(compiled, "train-split"))
    retries = ClusterSettings().retries
    pods, phase = pods_run(levels, compiled_pod_retry(compiled, "train-split"), KFP_2_17, itertools.repeat("Error"))
    assert (pods, phase) == ((retries + 1) * 3 ** levels, "Error") == (10935, "Error")


def test_the_always_patch_retried_a_deterministic_failure_thousands_of_times(compiled):
    """Why manifests/kfp was removed: with retryPolicy Always in templateDefaults a task that fails every time (bad
    data, a bug) was attempted at every level of the nesting."""
    levels = len(dag_templates_above(compiled, "train-split"))
    pods, _ = pods_run(levels, compiled_pod_retry(compiled, "train-split"), ALWAYS_PATCH, itertools.repeat("Failed"))
    assert pods == (ClusterSettings().retries + 1) * 3 ** levels


def test_without_template_defaults_failures_are_retried_by_the_task_only_and_deleted_pods_not_at_all(compiled):
    """KFP before 2.17.0 shipped no workflowDefaults: the pod's own strategy has Argo's default policy, OnFailure."""
    levels = len(dag_templates_above(compiled, "train-split"))
    retry = compiled_pod_retry(compiled, "train-split")
    assert pods_run(levels, retry, None, itertools.repeat("Failed")) == (ClusterSettings().retries + 1, "Failed")
    assert pods_run(levels, retry, None, itertools.repeat("Error")) == (1, "Error")
