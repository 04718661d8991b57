"""What the KFP 2.17 backend does with a compiled pipeline, for the parts kfp.local skips: the driver's resolution
and type checks of every task input, and the launcher's executor input and output handling. Each rule cites the
function of kubeflow/pipelines at tag 2.17.0 it follows. Used by tests/pipelines/test_backend_rules.py (components
run as processes on this machine) and tests/deploy/image_check.py (components run inside the built image).

Values are JSON values, as the backend's protobuf Values are: str, a number (int or float), bool, list, dict, None.
Iterations and tasks run one after another; Argo's scheduling, retries and MLMD are not emulated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class BackendRejected(Exception):
    """What the backend would fail the run with (the API server's submission check or a driver pod's error)."""


def kind(value) -> str:
    """The protobuf Value kind of a JSON value (structpb)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "struct"


KIND_OF_TYPE = {"STRING": "string", "NUMBER_INTEGER": "number", "NUMBER_DOUBLE": "number", "BOOLEAN": "bool",
                "LIST": "list", "STRUCT": "struct"}


def format_number(x: float) -> str:
    """Go's strconv.FormatFloat(x, 'f', -1, 64): the shortest decimal, never an exponent."""
    if isinstance(x, int) or x.is_integer():
        return str(int(x))
    text = repr(float(x))
    if "e" not in text:
        return text
    digits, exponent = text.split("e")
    return f"{float(text):.{max(0, len(digits.replace('-', '').replace('.', '')) - 1 - int(exponent))}f}"


def pb_value_to_text(value) -> str:
    """backend/src/v2/metadata/converter.go, PbValueToText."""
    k = kind(value)
    if k == "null":
        return ""
    if k == "string":
        return value
    if k == "number":
        return format_number(value)
    if k == "bool":
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def text_to_pb_value(text: str, parameter_type: str):
    """backend/src/v2/metadata/converter.go, TextToPbValue: how the launcher reads an output parameter's file."""
    try:
        if parameter_type == "STRING":
            return text
        if parameter_type == "NUMBER_INTEGER":
            return int(text.strip(), 10)
        if parameter_type == "NUMBER_DOUBLE":
            return float(text.strip())
        if parameter_type == "BOOLEAN":
            return {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}[text.strip().lower()]
        value = json.loads(text)
    except (ValueError, KeyError) as e:
        raise BackendRejected(f"TextToPbValue(text={text!r}, type={parameter_type!r}) failed: {e}") from None
    if kind(value) != KIND_OF_TYPE[parameter_type]:
        raise BackendRejected(f"TextToPbValue(text={text!r}, type={parameter_type!r}) failed: unexpected type")
    return value


def validate_run_parameters(root: dict, arguments: dict) -> None:
    """backend/src/apiserver/template/v2_template.go, validatePipelineJobInputs: a run's parameters as submitted
    (the KFP UI's form, kfp.Client) against the root's input definitions, before a workflow exists."""
    definitions = root.get("inputDefinitions", {}).get("parameters", {})
    for name, value in arguments.items():
        if name not in definitions:
            raise BackendRejected(f"input parameter {name} is not in the pipeline's inputs")
        expected = KIND_OF_TYPE[definitions[name]["parameterType"]]
        if kind(value) != expected:
            raise BackendRejected(f"input parameter {name} requires type {expected}, but the parameter value is "
                                  f"not of {expected} value type")
    for name, spec in definitions.items():
        if name not in arguments and not spec.get("isOptional") and "defaultValue" not in spec:
            raise BackendRejected(f"parameter {name} is not optional, yet has neither default value nor user "
                                  "provided value")


def with_defaults(root: dict, arguments: dict) -> dict:
    """backend/src/v2/compiler/argocompiler/argo.go, Compile: the root's defaults fill what was not submitted."""
    values = dict(arguments)
    for name, spec in root.get("inputDefinitions", {}).get("parameters", {}).items():
        if name not in values:
            if "defaultValue" in spec:
                values[name] = spec["defaultValue"]
            elif spec.get("isOptional"):
                values[name] = None
    return values


def check_and_convert(component: dict, values: dict, skip: tuple[str, ...] = ()) -> dict:
    """backend/src/v2/driver/resolve.go, resolveInputs' handleParamTypeValidationAndConversion: every input the
    component declares either has a value or a default; a STRING input takes any value as text (PbValueToText: the
    number 0 becomes "0"); any other type must receive its own kind of value, else the driver fails the task."""
    values = dict(values)
    for name, spec in component.get("inputDefinitions", {}).get("parameters", {}).items():
        if name in skip:
            continue
        if name not in values:
            if not spec.get("isOptional") and "defaultValue" not in spec:
                raise BackendRejected(f"neither value nor default value provided for non-optional parameter "
                                      f"{name!r}")
            continue
        value, expected = values[name], spec["parameterType"]
        if expected == "STRING":
            if kind(value) != "string":
                values[name] = pb_value_to_text(value)
        elif kind(value) == "null":
            raise BackendRejected(f'got null for input parameter "{name}"')
        elif kind(value) != KIND_OF_TYPE[expected]:
            raise BackendRejected(f'input parameter "{name}" type mismatch: expect {expected}, got {kind(value)}')
    return values


def resolve_inputs(task: dict, parent_inputs: dict, outputs: dict[str, dict]) -> dict:
    """backend/src/v2/driver/resolve.go, resolveInputs and resolveInputParameter: a task's parameters from its
    parent DAG's inputs, an upstream task's outputs (resolveUpstreamParameters; a loop's are its iterations'
    gathered in a list, CollectInputs) or a constant."""
    values = {}
    for name, spec in task.get("inputs", {}).get("parameters", {}).items():
        if "parameterExpressionSelector" in spec:
            raise BackendRejected(f"{name}: parameter expression selectors are not emulated")
        if "componentInputParameter" in spec:
            source = spec["componentInputParameter"]
            if source not in parent_inputs:
                raise BackendRejected(f"parent DAG does not have input parameter {source}")
            values[name] = parent_inputs[source]
        elif "taskOutputParameter" in spec:
            producer, key = spec["taskOutputParameter"]["producerTask"], spec["taskOutputParameter"]["outputParameterKey"]
            if key not in outputs.get(producer, {}):
                raise BackendRejected(f"producer task, {producer}, has no output parameter {key}")
            values[name] = outputs[producer][key]
        elif "runtimeValue" in spec:
            values[name] = spec["runtimeValue"]["constant"]
        else:
            raise BackendRejected(f"{name}: unsupported input parameter spec {sorted(spec)}")
    return values


def local_path(uri: str) -> str:
    """backend/src/v2/component/launcher_v2.go, LocalPathForURI (the scratch volumes the executor pod mounts)."""
    for scheme, mount in (("gs://", "/gcs/"), ("minio://", "/minio/"), ("s3://", "/s3/")):
        if uri.startswith(scheme):
            return mount + uri[len(scheme):]
    return uri  # a local pipeline root (this emulation's host runner): the path itself, as kfp.local does


@dataclass
class Execution:
    """One container task as its pod runs it: the command with `{{$}}` replaced, the environment, and the folders
    the launcher makes for its outputs before it starts the command (prepareOutputFolders; paths in the pod)."""
    task: str
    command: list[str]
    env: dict[str, str]
    executor_input: dict
    folders: list[str]


@dataclass
class Backend:
    """Runs a compiled pipeline (IR spec and Kubernetes platform spec) under the backend's rules. `execute` runs one
    Execution in a pod of its own and returns its exit status; `host_path` maps a path in the pod of the Execution
    it ran last to this machine (to read the outputs the launcher reads)."""
    spec: dict
    platform: dict
    pipeline_root: str
    execute: Callable[[Execution], int]
    host_path: Callable[[str], Path] = Path
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    output_parameter_dir: str = "/tmp/kfp/outputs"
    executed: list[Execution] = field(default_factory=list)

    def submit(self, arguments: dict) -> dict:
        """A run with `arguments`, as the API server and the root DAG driver take it; returns the root's outputs."""
        validate_run_parameters(self.spec["root"], arguments)
        return self._dag(self.spec["root"], with_defaults(self.spec["root"], arguments), "root")

    def _dag(self, component: dict, inputs: dict, path: str) -> dict:
        tasks, outputs = component["dag"]["tasks"], {}
        for name in _in_order(tasks):
            task = tasks[name]
            child = self.spec["components"][task["componentRef"]["name"]]
            values = resolve_inputs(task, inputs, outputs)
            where = f"{path}/{name}"
            if "parameterIterator" in task:
                outputs[name] = self._loop(task, child, values, where)
            elif "dag" in child:
                outputs[name] = self._dag(child, check_and_convert(child, values), where)
            else:
                outputs[name] = self._container(task, child, check_and_convert(child, values), where)
        return {key: outputs[out["valueFromParameter"]["producerSubtask"]][out["valueFromParameter"]["outputParameterKey"]]
                for key, out in component["dag"].get("outputs", {}).get("parameters", {}).items()}

    def _loop(self, task: dict, child: dict, values: dict, where: str) -> dict:
        """The iterator DAG driver checks the loop's inputs but its item; each iteration driver sets the item from
        the list (resolveInputs, isIterationDriver; getItems) and checks it against the loop component's inputs."""
        iterator = task["parameterIterator"]
        item_input, items_input = iterator["itemInput"], iterator["items"].get("inputParameter")
        values = check_and_convert(child, values, skip=(item_input,))
        items = values[items_input] if items_input else json.loads(iterator["items"]["raw"])
        if kind(items) != "list":
            raise BackendRejected(f"loop items {items_input}: expected a list, got {kind(items)}")
        if not items:
            # iteration_count 0: resolveUpstreamParameters collects only when getParallelForIterationCount > 0,
            # else it looks for the producer's own execution, which no iteration created: the consumer's driver fails.
            return {}
        gathered: dict[str, list] = {}
        for index, item in enumerate(items):
            iteration = {k: v for k, v in values.items() if k != items_input} | {item_input: item}
            result = self._dag(child, check_and_convert(child, iteration, skip=(items_input,)), f"{where}[{index}]")
            for key, value in result.items():
                gathered.setdefault(key, []).append(value)
        return gathered

    def _container(self, task: dict, component: dict, values: dict, where: str) -> dict:
        """The container driver's executor input (driver.go, provisionOutputs), the launcher's defaults, command and
        outputs (launcher_v2.go: addDefaultParams, compileCmdAndArgs, getExecutorOutputFile,
        collectOutputParameters)."""
        label = component["executorLabel"]
        container = self.spec["deploymentSpec"]["executors"][label]["container"]
        task_root = f"{self.pipeline_root.rstrip('/')}/{where.replace('/', '-').replace('[', '-').replace(']', '')}"
        outputs_spec = component.get("outputDefinitions", {})
        executor_input = {
            "inputs": {"parameterValues": values},
            "outputs": {
                "parameters": {name: {"outputFile": f"{self.output_parameter_dir}/{name}"}
                               for name in outputs_spec.get("parameters", {})},
                "artifacts": {name: {"artifacts": [{"name": name, "uri": f"{task_root}/{name}",
                                                    "type": spec["artifactType"], "metadata": {}}]}
                              for name, spec in outputs_spec.get("artifacts", {}).items()},
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
        execution = Execution(where, command, self._env(label, container), executor_input, folders)
        self.executed.append(execution)
        status = self.execute(execution)
        if status != 0:
            raise BackendRejected(f"{where}: the component exited with status {status}")
        output_file = self.host_path(executor_input["outputs"]["outputFile"])
        written = json.loads(output_file.read_text()) if output_file.exists() else {}
        parameters = dict(written.get("parameterValues", {}))
        for name, out in executor_input["outputs"]["parameters"].items():
            if name not in parameters:
                text = self.host_path(out["outputFile"]).read_text()
                parameters[name] = text_to_pb_value(text, outputs_spec["parameters"][name]["parameterType"])
        return parameters

    def _env(self, label: str, container: dict) -> dict[str, str]:
        """The container's env from the IR and, from the Kubernetes platform spec, its Secrets' and ConfigMaps'
        keys (a key that is missing stops the pod before it starts, as the kubelet does)."""
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        k8s = self.platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get(
            "executors", {}).get(label, {})
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


def run_on_host(cwd: Path, base_env: dict[str, str] | None = None, timeout: float = 600) -> Callable[[Execution], int]:
    """Runs a component as its pod's main container would, but on this machine: the compiled command in a fresh
    process with the task's environment on top of `base_env` (the Python of this environment as `python3`)."""
    def execute(execution: Execution) -> int:
        env = {**(base_env if base_env is not None else os.environ), **execution.env}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        log = cwd / f"{len(list(cwd.glob('*.log'))):02d}-{execution.task.rsplit('/', 1)[-1]}.log"
        for folder in execution.folders:
            Path(folder).mkdir(parents=True, exist_ok=True)
        with log.open("w") as f:
            return subprocess.run(execution.command, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
    return execute

