"""What the KFP 2.17 backend does with a compiled pipeline, for the parts kfp.local skips: the driver's rules for
each task's inputs (tests/backend/kfp_driver.py), the launcher's executor input and output handling, the pod each
container task gets (tests/backend/kfp_pod.py), and Argo's rules for what runs after a task fails (`Backend`). Each
rule cites the function of kubeflow/pipelines at tag 2.17.0, or of argo-workflows at v4.0.5, it follows. Used by
tests/backend/test_backend_rules.py, test_heal.py and test_batches.py (components run as processes on this machine)
and tests/deploy/image_check.py (components run inside the built image).

Iterations and tasks run one after another; Argo's scheduling, its retries and MLMD are not emulated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tests.backend.kfp_driver import (BackendRejected, check_and_convert, evaluate_condition, kind,
                                      resolve_inputs, text_to_pb_value, validate_run_parameters, with_defaults)
from tests.backend.kfp_pod import pod_settings


class ContainerFailed(BackendRejected):
    """The task's driver passed and its container exited non-zero."""


def local_path(uri: str) -> str:
    """backend/src/v2/component/launcher_v2.go, LocalPathForURI (the scratch volumes the executor pod mounts)."""
    for scheme, mount in (("gs://", "/gcs/"), ("minio://", "/minio/"), ("s3://", "/s3/")):
        if uri.startswith(scheme):
            return mount + uri[len(scheme):]
    return uri  # a local pipeline root (this emulation's host runner): the path itself, as kfp.local does


@dataclass
class Execution:
    """One container task as its pod runs it: the command with `{{$}}` replaced, the environment, the folders the
    launcher makes for its outputs before it starts the command (prepareOutputFolders; paths in the pod), and the
    pod's settings (`pod_settings`)."""
    task: str
    command: list[str]
    env: dict[str, str]
    executor_input: dict
    folders: list[str]
    pod: dict = field(default_factory=dict)

    @property
    def log_file(self) -> str | None:
        """Where the launcher tees the command's output (launcher_v2.go, getLogWriter): the executor-logs
        artifact's path, which the driver adds when the API server publishes logs."""
        logs = self.executor_input["outputs"]["artifacts"].get("executor-logs")
        return local_path(logs["artifacts"][0]["uri"]) if logs else None


@dataclass
class Node:
    """A task's node in the workflow as Argo records it: its phase and message (workflow/controller/operator.go)."""
    path: str
    phase: str  # Succeeded, Failed, Error, Omitted, Skipped
    message: str = ""
    hooked: bool = False  # run as a task's exit lifecycle hook


EXIT_TASK = "ALL_UPSTREAM_TASKS_COMPLETED"  # TriggerStrategy of `ignore_upstream_failure()` and ExitHandler tasks


@dataclass
class Backend:
    """Runs a compiled pipeline (IR spec and Kubernetes platform spec) under the backend's rules. `execute` runs one
    Execution in a pod of its own and returns its exit status; `host_path` maps a path in the pod of the Execution
    it ran last to this machine (to read the outputs the launcher reads). `publish_logs`: the API server's
    PUBLISH_LOGS, "true" in KFP 2.17.0's manifests (manifests/kustomize/base/pipeline/ml-pipeline-apiserver-
    deployment.yaml).

    Argo's rules on failure (argo-workflows v4.0.5, workflow/controller/dag.go): a task whose pod or driver fails
    is Failed and the run goes on; a task runs when its `depends` holds, which KFP's compiler makes `A.Succeeded &&
    B.Succeeded` over its dependent tasks (backend/src/v2/compiler/argocompiler/dag.go, depends), else it is Omitted
    (executeDAGTask, evaluateDependsLogic); every iteration of a loop runs, and the loop is Failed once they are all
    done if any failed (the task group's phase, executeDAGTask); a DAG is Failed when a task of it failed, Omitted
    and Skipped tasks counting as done (assessDAGPhase). A task with an exit hook runs the hook when it ends, and
    its dependents wait for the hook (evaluateDependsLogic, CheckAllHooksFullfilled); a hook's own phase is not
    its DAG's (runOnExitNode adds it under the task's node, which assessDAGPhase reads). A Failed pod is not
    retried: KFP 2.17's stock retryPolicy is OnError, and a main container that exits non-zero is Failed
    (operator.go, inferFailedReason; processNodeRetries). Retries of Error nodes are modelled in
    tests/backend/test_argo_retries.py, not here."""
    spec: dict
    platform: dict
    pipeline_root: str
    execute: Callable[[Execution], int]
    host_path: Callable[[str], Path] = Path
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    output_parameter_dir: str = "/tmp/kfp/outputs"
    publish_logs: bool = True
    executed: list[Execution] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    driver_failed: set[str] = field(default_factory=set)

    def submit(self, arguments: dict, check: bool = True) -> str:
        """A run with `arguments`, as the API server and the root DAG driver take it; returns the run's phase.
        `check`: a run that is not Succeeded raises BackendRejected with its first failed node's message."""
        validate_run_parameters(self.spec["root"], arguments)
        phase, _ = self._dag(self.spec["root"], with_defaults(self.spec["root"], arguments), "root")
        if check and phase != "Succeeded":
            failed = next(n for n in self.nodes if n.phase in ("Failed", "Error"))
            raise BackendRejected(failed.message)
        return phase

    def phase(self, suffix: str) -> list[str]:
        """The phases of the nodes whose path ends with `suffix`, in the order they ended."""
        return [n.phase for n in self.nodes if n.path.endswith(suffix)]

    def _record(self, path: str, phase: str, message: str = "", hooked: bool = False) -> str:
        self.nodes.append(Node(path, phase, message, hooked))
        return phase

    def _dag(self, component: dict, inputs: dict, path: str) -> tuple[str, dict]:
        """A DAG's tasks in dependency order; its phase and outputs. KFP's compiler makes each exit task (trigger
        strategy ALL_UPSTREAM_TASKS_COMPLETED) the exit hook of every task it depends on, the last one by name
        winning, except a loop's, whose iterator task takes no hook (argocompiler/dag.go: DAG's
        taskToExitTemplate; task passes exitTemplate to dagTask and containerExecutorTask, not to iteratorTask)."""
        tasks, outputs, phases = component["dag"]["tasks"], {}, {}
        exits = {n for n, t in tasks.items() if t.get("triggerPolicy", {}).get("strategy") == EXIT_TASK}
        hooks = {dep: name for name in sorted(exits) for dep in tasks[name].get("dependentTasks", [])
                 if "parameterIterator" not in tasks[dep]}
        for name in _in_order({n: t for n, t in tasks.items() if n not in exits}):
            where = f"{path}/{name}"
            if any(phases[dep] != "Succeeded" for dep in tasks[name].get("dependentTasks", [])):
                phases[name] = self._record(where, "Omitted", "omitted: depends condition not met")
                continue
            phases[name] = self._task(tasks[name], inputs, outputs, where)
            # The hook is on the DAG or executor task, which a failed driver leaves Omitted (dag.go: `task` makes
            # it depend on `<name>-driver.Succeeded`): then it does not run.
            if name in hooks and where not in self.driver_failed:
                self._task(tasks[hooks[name]], inputs, outputs, f"{path}/{hooks[name]}", hooked=True)
        phase = next((p for p in phases.values() if p in ("Failed", "Error")), "Succeeded")
        out = {}
        for key, spec in component["dag"].get("outputs", {}).get("parameters", {}).items():
            source = spec["valueFromParameter"]
            if source["outputParameterKey"] in outputs.get(source["producerSubtask"], {}):
                out[key] = outputs[source["producerSubtask"]][source["outputParameterKey"]]
        return phase, out

    def _task(self, task: dict, inputs: dict, outputs: dict, where: str, hooked: bool = False) -> str:
        """One task: its driver resolves and checks its inputs (a refusal fails the driver's pod: the task is
        Failed), a condition false skips it (driver/condition.go; the compiled `when`), then its loop, DAG or
        container runs."""
        name = where.rsplit("/", 1)[-1]
        child = self.spec["components"][task["componentRef"]["name"]]
        try:
            values = resolve_inputs(task, inputs, outputs)
            condition = task.get("triggerPolicy", {}).get("condition")
            if condition and not evaluate_condition(condition, values):
                return self._record(where, "Skipped", f"when '{condition}' evaluated false", hooked)
            if "parameterIterator" in task:
                phase, outputs[name] = self._loop(task, child, values, where)
            elif "dag" in child:
                phase, outputs[name] = self._dag(child, check_and_convert(child, values), where)
            else:
                phase, outputs[name] = self._container(task, child, check_and_convert(child, values), where)
        except BackendRejected as e:
            if not isinstance(e, ContainerFailed):
                self.driver_failed.add(where)
            return self._record(where, "Failed", f"{where}: {e}", hooked)
        return self._record(where, phase, "" if phase == "Succeeded" else f"{where}: {phase}", hooked)

    def _loop(self, task: dict, child: dict, values: dict, where: str) -> tuple[str, dict]:
        """The iterator DAG driver checks the loop's inputs but its item; each iteration driver sets the item from
        the list (resolveInputs, isIterationDriver; getItems) and checks it against the loop component's inputs.
        Every iteration runs; the loop is Failed if one failed."""
        iterator = task["parameterIterator"]
        item_input, items_input = iterator["itemInput"], iterator["items"].get("inputParameter")
        values = check_and_convert(child, values, skip=(item_input,))
        items = values[items_input] if items_input else json.loads(iterator["items"]["raw"])
        if kind(items) != "list":
            raise BackendRejected(f"loop items {items_input}: expected a list, got {kind(items)}")
        if not items:
            # iteration_count 0: Argo skips the expanded task ("Skipped, empty params"), and resolveUpstreamParameters
            # collects only when getParallelForIterationCount > 0, else it looks for the producer's own execution,
            # which no iteration created: a consumer of the loop's outputs fails in its driver.
            return "Succeeded", {}
        gathered: dict[str, list] = {}
        phases = []
        for index, item in enumerate(items):
            iteration = {k: v for k, v in values.items() if k != items_input} | {item_input: item}
            at = f"{where}[{index}]"
            try:
                phase, result = self._dag(child, check_and_convert(child, iteration, skip=(items_input,)), at)
            except BackendRejected as e:
                phase, result = self._record(at, "Failed", f"{at}: {e}"), {}
            phases.append(phase)
            for key, value in result.items():
                gathered.setdefault(key, []).append(value)
        return next((p for p in phases if p in ("Failed", "Error")), "Succeeded"), gathered

    def _container(self, task: dict, component: dict, values: dict, where: str) -> tuple[str, dict]:
        """The container driver's executor input (driver.go, provisionOutputs, which adds the executor-logs artifact
        when logs are published) and pod (`pod_settings`), the launcher's defaults, command and outputs
        (launcher_v2.go: addDefaultParams, qualifyExecutorLogsForRetry, compileCmdAndArgs, getExecutorOutputFile,
        collectOutputParameters). A non-zero exit is a Failed node (inferFailedReason)."""
        label = component["executorLabel"]
        container = self.spec["deploymentSpec"]["executors"][label]["container"]
        task_root = f"{self.pipeline_root.rstrip('/')}/{where.replace('/', '-').replace('[', '-').replace(']', '')}"
        outputs_spec = component.get("outputDefinitions", {})
        artifacts = dict(outputs_spec.get("artifacts", {}))
        if self.publish_logs:
            artifacts["executor-logs"] = {"artifactType": {"schemaTitle": "system.Artifact", "schemaVersion": "0.0.1"}}
        executor_input = {
            "inputs": {"parameterValues": values},
            "outputs": {
                "parameters": {name: {"outputFile": f"{self.output_parameter_dir}/{name}"}
                               for name in outputs_spec.get("parameters", {})},
                "artifacts": {name: {"artifacts": [{"name": name, "type": spec["artifactType"], "metadata": {},
                                                    # the first attempt's retry index (appendRetryIndexSuffix)
                                                    "uri": f"{task_root}/{name}" + ("-0" if name == "executor-logs"
                                                                                    else "")}]}
                              for name, spec in artifacts.items()},
                "outputFile": f"{local_path(task_root)}/output_metadata.json"}}
        for name, spec in component.get("inputDefinitions", {}).get("parameters", {}).items():
            if name not in executor_input["inputs"]["parameterValues"] and "defaultValue" in spec:
                executor_input["inputs"]["parameterValues"][name] = spec["defaultValue"]
        placeholder = json.dumps(executor_input)
        command = [a.replace("{{$}}", placeholder) for a in container["command"] + container.get("args", [])]
        folders = sorted({str(Path(path).parent) for path in (
            [executor_input["outputs"]["outputFile"]] +
            [p["outputFile"] for p in executor_input["outputs"]["parameters"].values()] +
            [local_path(a["artifacts"][0]["uri"]) for a in executor_input["outputs"]["artifacts"].values()])})
        execution = Execution(where, command, self._env(label, container), executor_input, folders,
                              pod_settings(container, self._k8s(label)))
        self.executed.append(execution)
        status = self.execute(execution)
        if status != 0:  # inferFailedReason's message for the main container
            raise ContainerFailed(f"main: Error (exit code {status})")
        output_file = self.host_path(executor_input["outputs"]["outputFile"])
        written = json.loads(output_file.read_text()) if output_file.exists() else {}
        parameters = dict(written.get("parameterValues", {}))
        for name, out in executor_input["outputs"]["parameters"].items():
            if name not in parameters:
                text = self.host_path(out["outputFile"]).read_text()
                parameters[name] = text_to_pb_value(text, outputs_spec["parameters"][name]["parameterType"])
        return "Succeeded", parameters

    def _k8s(self, label: str) -> dict:
        return self.platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get(
            "executors", {}).get(label, {})

    def _env(self, label: str, container: dict) -> dict[str, str]:
        """The container's env from the IR and, from the Kubernetes platform spec, its Secrets' and ConfigMaps'
        keys (a key that is missing stops the pod before it starts, as the kubelet does)."""
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        k8s = self._k8s(label)
        for kind_, store in (("secretAsEnv", self.secrets), ("configMapAsEnv", self.config_maps)):
            for ref in k8s.get(kind_, []):
                name = ref.get("secretName") or ref.get("configMapName")
                for pair in ref["keyToEnv"]:
                    key = pair.get("secretKey") or pair.get("configMapKey")
                    if key not in store.get(name, {}):
                        raise BackendRejected(f"{label}: {kind_} {name} has no key {key}: the pod cannot start")
                    env[pair["envVar"]] = store[name][key]
        return env


def _in_order(tasks: dict) -> list[str]:
    """The tasks of a DAG, each after the tasks it depends on."""
    done: list[str] = []
    while len(done) < len(tasks):
        ready = [n for n in sorted(tasks) if n not in done and set(tasks[n].get("dependentTasks", [])) <= set(done)]
        if not ready:
            raise BackendRejected(f"a cycle among {sorted(set(tasks) - set(done))}")
        done += ready
    return done
