"""A container task's pod as KFP 2.17 makes it, and a stand-in that runs the pod's command on this machine.

`pod_settings` is what reaches the pod from the compiled spec: the driver's pod spec patch (backend/src/v2/driver/
driver.go, initPodSpecPatch: resources and the accelerator limit; k8s.go, extendPodSpecPatch: node selector,
tolerations, activeDeadlineSeconds), the compiler's pod metadata (backend/src/v2/compiler/argocompiler/
container.go, extendPodMetadata: labels and annotations) and its hardened security context (security_context.go,
applySecurityContextToExecutorTemplate: the pod's seccomp profile; the main container's allowPrivilegeEscalation
false, every capability dropped, seccomp RuntimeDefault). `run_on_host` applies what a process on this machine can:
the environment, no new privileges (allowPrivilegeEscalation false is the kernel's no_new_privs), the launcher's log
file, and a preemption's signals.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from tests.backend.kfp_backend import Execution

PR_SET_NO_NEW_PRIVS = 38  # linux/prctl.h
HARDENED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                      "seccompProfile": {"type": "RuntimeDefault"}}


def pod_settings(container: dict, k8s: dict) -> dict:
    """The pod of a container task: its limits and requests, node selector, tolerations, deadline, labels,
    annotations and security contexts, from the IR's container and the task's Kubernetes executor config."""
    resources = container.get("resources", {})
    limits, requests = {}, {}
    accelerator = resources.get("accelerator", {})
    if accelerator:
        limits[accelerator.get("resourceType") or accelerator["type"]] = str(accelerator.get("resourceCount") or
                                                                             accelerator.get("count"))
    for ir, key in (("resourceCpuLimit", "cpu"), ("resourceMemoryLimit", "memory")):  # the quantities as given
        if ir in resources:
            limits[key] = resources[ir]
    for ir, key in (("resourceCpuRequest", "cpu"), ("resourceMemoryRequest", "memory")):
        if ir in resources:
            requests[key] = resources[ir]
    pod = {"resources": {"limits": limits, "requests": requests},
           "nodeSelector": k8s.get("nodeSelector", {}).get("labels", {}),
           "tolerations": k8s.get("tolerations", []),
           "labels": k8s.get("podMetadata", {}).get("labels", {}),
           "annotations": k8s.get("podMetadata", {}).get("annotations", {}),
           "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
           "containerSecurityContext": dict(HARDENED_CONTAINER)}
    if int(k8s.get("activeDeadlineSeconds", 0)) > 0:
        pod["activeDeadlineSeconds"] = int(k8s["activeDeadlineSeconds"])
    return pod


def _no_new_privileges() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def preempted(process: subprocess.Popen, grace_seconds: float) -> int:
    """A pod deleted with a grace period, as the kubelet ends it: SIGTERM to the container's first process, SIGKILL to
    everything in it once the grace period has passed; the exit code a container runtime reports (128 + signal)."""
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        status = process.wait()
    with_children_gone(process.pid)
    return 128 - status if status < 0 else status


def with_children_gone(group: int) -> None:
    """The container's other processes end with it (its PID namespace): SIGKILL what is left of the group."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_on_host(cwd: Path, base_env: dict[str, str] | None = None, timeout: float = 600,
                preempt: Callable[[Execution], Callable[[], bool] | None] | None = None,
                grace_seconds: float = 2.0) -> Callable[[Execution], int]:
    """Runs a component as its pod's main container would, but on this machine: the compiled command in a fresh
    process (its own process group) with the task's environment on top of `base_env` (the Python of this
    environment as `python3`), no new privileges, its output also in the executor-logs artifact's file.
    `preempt(execution)` may return a test; once it holds, the pod is deleted as a preemption deletes it."""
    def execute(execution: Execution) -> int:
        env = {**(base_env if base_env is not None else os.environ), **execution.env}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        log = cwd / f"{len(list(cwd.glob('*.log'))):02d}-{execution.task.rsplit('/', 1)[-1]}.log"
        for folder in execution.folders:
            Path(folder).mkdir(parents=True, exist_ok=True)
        privileges = execution.pod.get("containerSecurityContext", {}).get("allowPrivilegeEscalation") is False
        when = preempt(execution) if preempt else None
        with log.open("w") as f:
            process = subprocess.Popen(execution.command, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                       start_new_session=True, preexec_fn=_no_new_privileges if privileges else None)
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                if when is not None and when():
                    status = preempted(process, grace_seconds)
                    break
                time.sleep(0.1)
            else:
                if process.poll() is None:
                    status = preempted(process, 0)
                else:
                    status = process.returncode
                    with_children_gone(process.pid)
        if execution.log_file:
            Path(execution.log_file).write_bytes(log.read_bytes())
        return status
    return execute
