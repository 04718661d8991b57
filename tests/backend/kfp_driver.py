"""The KFP 2.17 backend's rules for a run's parameter values, which kfp.local skips: the API server's check of the
parameters a run is submitted with, the driver's resolution and type checks of every task input and its condition,
and the converter between protobuf Values and the text a container reads and writes. Each rule cites the function of
kubeflow/pipelines at tag 2.17.0 it follows. Used by tests/backend/kfp_backend.py, which runs a compiled pipeline
under these rules and Argo's, and by tests/backend/test_backend_rules.py.

Values are JSON values, as the backend's protobuf Values are: str, a number (int or float), bool, list, dict, None.
"""

from __future__ import annotations

import json
import re


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


# backend/src/apiserver/template/v2_template.go, validatePipelineJobInputs: its words for each kind
SUBMISSION_TYPE_TEXT = {
    "number": "double or integer, but the parameter value is not of number value type",
    "string": "string, but the input parameter is not of string value type",
    "bool": "bool, but the input parameter is not of bool value type",
    "list": "list, but the input parameter is not of list value type",
    "struct": "struct, but the input parameter is not of struct value type"}
CONDITION = re.compile(r"inputs\.parameter_values\['([^']+)'\] (==|!=) (true|false|-?[0-9.]+|'[^']*')")


def evaluate_condition(condition: str, values: dict) -> bool:
    """backend/src/v2/expression/expression.go, Condition (CEL over the task's resolved inputs), for the one form
    kfp's `dsl.If` compiles a comparison of an output with a constant into; anything else is refused."""
    match = CONDITION.fullmatch(condition)
    if not match:
        raise BackendRejected(f"condition {condition!r} is not emulated")
    name, op, constant = match.groups()
    if name not in values:
        raise BackendRejected(f"condition {condition!r}: no input {name}")
    equal = values[name] == json.loads(constant.replace("'", '"'))
    return equal if op == "==" else not equal


def validate_run_parameters(root: dict, arguments: dict) -> None:
    """backend/src/apiserver/template/v2_template.go, validatePipelineJobInputs: a run's parameters as submitted
    (the KFP UI's form, kfp.Client) against the root's input definitions, before a workflow exists."""
    definitions = root.get("inputDefinitions", {}).get("parameters", {})
    for name, value in arguments.items():
        if name not in definitions:
            raise BackendRejected(f"input parameter {name} is not in the pipeline's inputs")
        expected = KIND_OF_TYPE[definitions[name]["parameterType"]]
        if kind(value) != expected:
            raise BackendRejected(f"input parameter {name} requires type {SUBMISSION_TYPE_TEXT[expected]}")
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
