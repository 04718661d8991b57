"""The acgan-ensemble pipeline: one AC-GAN per class split, trained in parallel, assembled into one ensemble.

The same pipeline runs on Kubeflow Pipelines (compiled with `acgan compile`, submitted with `acgan submit`) and on one
machine through kfp.local (`acgan run`). Kubernetes settings (image, GPU, node pool, Secret, timeout, parallelism)
are fixed at compile time from `ClusterSettings`; everything a user changes per run is a pipeline parameter.
"""

import contextlib
import inspect
import typing

from kfp import dsl, kubernetes
from pydantic import BaseModel

from acgan.cluster_settings import ClusterSettings
from acgan.presets import preset_defaults
from acgan.settings import RunSettings, value_type
from components.assemble_ensemble import assemble_ensemble
from components.evaluate_ensemble import evaluate_ensemble
from components.prepare_data import prepare_data
from components.prepare_split_data import prepare_split_data
from components.train_split import train_split
from components.unfinished_splits import unfinished_splits

PIPELINE_NAME = "acgan-ensemble"
STORE_ENV = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
SOURCE_ENV = {"AWS_ACCESS_KEY_ID": "ACGAN_SOURCE_AWS_ACCESS_KEY_ID",
              "AWS_SECRET_ACCESS_KEY": "ACGAN_SOURCE_AWS_SECRET_ACCESS_KEY"}
STORE_ACCESS_LABEL = ("acgan.ai/store-access", "true")  # manifests/base/minio/network-policy.yaml admits these pods
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Karpenter does not voluntarily disrupt (consolidate, drift-replace) a node running such a pod, nor drain it on a spot
# interruption notice: a reclaim then ends the pod with no SIGTERM, which the split's checkpoints and the heal pass
# cover (docs/operators.md, section 5: what a reclaim costs with and without it).
DO_NOT_DISRUPT = ("karpenter.sh/do-not-disrupt", "true")
# Where an operator's CA bundle (ClusterSettings.store_ca_config_map) is mounted; SSL_CERT_FILE names its file, as
# acgan/store/s3.py reads it.
STORE_CA_MOUNT, STORE_CA_KEY = "/etc/acgan/store-ca", "ca.crt"


def on_cluster(task: dsl.PipelineTask, cluster: ClusterSettings, gpu: bool) -> dsl.PipelineTask:
    """The project's image, the store's endpoint, credentials and CA bundle (if any) from the cluster, the label
    that lets the pod reach the store, no caching (the store decides what is done), retries (every step is safe to
    run again: the store says what is done); GPU tasks also get a GPU, the GPU pool's label and taint toleration,
    the Kueue queue label, Karpenter's do-not-disrupt annotation and a time limit.

    The retry holds inside ParallelFor on the backend at KFP 2.17.0: the Argo compiler visits every DAG component
    (backend/src/v2/compiler/visitor.go, pipelineDFS.dfs), compiles each task of the loop body's DAG with its own
    PipelineTaskSpec (argocompiler/dag.go, workflowCompiler.task -> containerExecutorTask), and
    argocompiler/container.go, addContainerExecutorTemplate, puts a retryStrategy on the task's
    `retry-system-container-impl` template whenever task.GetRetryPolicy() is set, at any depth. kfp.local honours
    it per iteration too (tests/pipelines/test_runs.py)."""
    task.set_container_image(cluster.image).set_caching_options(False)
    if cluster.retries:
        # Argo stops retrying once backoff.maxDuration has passed since the first attempt ended (KFP's default is
        # an hour): long enough here for every attempt to run to its time limit.
        task.set_retry(cluster.retries, backoff_duration=f"{cluster.retry_backoff_seconds}s", backoff_factor=2.0,
                       backoff_max_duration=f"{cluster.timeout_seconds * (cluster.retries + 1)}s")
    kubernetes.add_pod_label(task, *STORE_ACCESS_LABEL)
    kubernetes.use_secret_as_env(task, secret_name=cluster.store_secret, secret_key_to_env=STORE_ENV)
    kubernetes.use_config_map_as_env(task, config_map_name=cluster.store_config_map,
                                     config_map_key_to_env={"ACGAN_S3_ENDPOINT": "ACGAN_S3_ENDPOINT"})
    if cluster.store_ca_config_map:
        kubernetes.use_config_map_as_volume(task, config_map_name=cluster.store_ca_config_map,
                                            mount_path=STORE_CA_MOUNT)
        task.set_env_variable("SSL_CERT_FILE", f"{STORE_CA_MOUNT}/{STORE_CA_KEY}")
    if gpu:
        if cluster.kueue_queue:  # only GPU pods queue: the CPU steps run at once on any node, outside Kueue's quota
            kubernetes.add_pod_label(task, KUEUE_QUEUE_LABEL, cluster.kueue_queue)
        task.set_cpu_request(cluster.train_cpu).set_memory_request(cluster.train_memory)
        if cluster.gpus_per_task:
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(cluster.gpus_per_task)
        if cluster.gpu_toleration:
            kubernetes.add_toleration(task, key=cluster.gpu_toleration, operator="Exists", effect="NoSchedule")
        for key, value in cluster.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        kubernetes.set_timeout(task, cluster.timeout_seconds)
        kubernetes.add_pod_annotation(task, *DO_NOT_DISRUPT)
    return task


def reads_source(task: dsl.PipelineTask, cluster: ClusterSettings) -> dsl.PipelineTask:
    """A task that reads the data source: its CPU (request and limit, so decoding sizes its pool to the quota) and
    memory, the source's volume, and an S3 source's own endpoint and Secret when it is not on the store's."""
    task.set_cpu_request(cluster.prepare_cpu).set_cpu_limit(cluster.prepare_cpu)
    task.set_memory_request(cluster.prepare_memory)
    if cluster.data_pvc:
        name, _, mount = cluster.data_pvc.partition(":")
        kubernetes.mount_pvc(task, pvc_name=name, mount_path=mount)
    if cluster.source_endpoint:
        task.set_env_variable("ACGAN_SOURCE_S3_ENDPOINT", cluster.source_endpoint)
    if cluster.source_secret:
        kubernetes.use_secret_as_env(task, secret_name=cluster.source_secret, secret_key_to_env=SOURCE_ENV)
    return task


def parameter_type(annotation) -> type:
    """A settings field's type as a KFP parameter (str, int, float, bool or list): its values' type as the command
    line reads them too (`value_type`). KFP has no Literal, no Path and no None: an optional value is a string, ""
    for None (`pipeline_arguments`)."""
    kind = value_type(annotation)
    return kind if kind in (int, float, bool, list) and type(None) not in typing.get_args(annotation) else str


def pipeline_signature(model: type[BaseModel], preset: str) -> inspect.Signature:
    """The pipeline's parameters: one per field of `model`, its KFP type, its default the preset's (KFP strings have
    no None: ""). kfp reads a pipeline's parameters with inspect.signature, which honours `__signature__`, so a new
    setting reaches the pipeline, and the KFP UI, without an edit here."""
    defaults = preset_defaults(model, preset)
    parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    annotation=parameter_type(field.annotation),
                                    default=inspect.Parameter.empty if field.is_required()
                                    else "" if defaults[name] is None else defaults[name])
                  for name, field in model.model_fields.items()]
    return inspect.Signature(sorted(parameters, key=lambda p: p.default is not inspect.Parameter.empty))


def parameter_docs() -> str:
    """The `Args:` section of the pipeline's docstring, from RunSettings' field descriptions: kfp takes each
    parameter's description in the KFP UI from it, so the UI and `acgan --help`'s settings share one source."""
    return "Args:\n" + "\n".join(f"    {name}: {field.description}" for name, field in RunSettings.model_fields.items())


def build_pipeline(cluster: ClusterSettings = ClusterSettings(), preset: str = "paper"):
    """The pipeline, its parameters RunSettings' fields with the defaults of `preset` (the paper's unless another
    is named); with `cluster.heal_passes`, the heal passes of `heal_stage` after the first pass of training."""
    signature = pipeline_signature(RunSettings, preset)
    # Graph components are made before the pipeline's own context: kfp refuses one made inside another.
    first_pass = train_pass(cluster) if cluster.heal_passes else None
    heal = heal_stage(cluster, cluster.heal_passes, gated=True) if cluster.heal_passes else None

    def acgan_ensemble(*values):
        """1. Plan: list the data set's classes, group them into class splits; output the splits to train.
        2. Per class split (at most `parallelism` at once): build its data shard from that split's classes (skipped
           when complete), then train it, resuming from its checkpoints.
        3. Assemble: map every class to its split's newest verified checkpoint, or fail naming the splits not ready.
        4. Evaluate: sample every class through the ensemble; the analyses chosen (`analyses`, every one by default)
           as metrics and a report.
        """
        run = signature.bind(*values).arguments  # every RunSettings field by name (kfp passes them in order)
        store = run["store"]
        prepare = prepare_data(**run).set_display_name("Plan the class splits")
        reads_source(on_cluster(prepare, cluster, gpu=False), cluster)
        if cluster.heal_passes:
            first = first_pass(store=store, splits=prepare.output).set_display_name("Train the class splits")
            # Only the run's parameters reach the hook: the compiler hooks an exit task to each task it depends on
            # (argocompiler/dag.go, DAG: taskToExitTemplate[dep] for every dependent task), the plan's too.
            heal(store=store, run_splits=run["split_ids"]).after(first).set_display_name(
                "Heal the splits a failed pod left").ignore_upstream_failure()
            assemble_and_evaluate(cluster, store, run["split_ids"], prepare.output, first)
        else:  # kfp.local (`acgan run`, `acgan rerun --local`): one run over the splits asked, nothing to gate
            train = train_splits(cluster, store, prepare.output)
            assemble_and_evaluate(cluster, store, run["split_ids"], dsl.Collected(train.outputs["Output"]),
                                  gated=False)

    acgan_ensemble.__signature__ = signature
    acgan_ensemble.__doc__ += "\n" + parameter_docs()
    return dsl.pipeline(name=PIPELINE_NAME, description="Class-split AC-GAN ensemble (Odena, Olah & Shlens 2016)")(
        acgan_ensemble)


def train_splits(cluster: ClusterSettings, store, splits) -> dsl.PipelineTask:
    """The fan-out over `splits` in the current DAG: per split its shard, then its training; returns the training
    task (inside the loop)."""
    with dsl.ParallelFor(items=splits, parallelism=cluster.parallelism, name="class-splits") as split:
        shard = prepare_split_data(store=store, split=split).set_display_name("Prepare one split's data")
        reads_source(on_cluster(shard, cluster, gpu=False), cluster)
        train = train_split(store=store, split=shard.output, restarts=cluster.trainer_restarts)
        train.set_display_name("Train one class split")
        on_cluster(train, cluster, gpu=True)
        train.set_env_variable("OMP_NUM_THREADS", str(cluster.training_threads))
    return train


def assemble_and_evaluate(cluster: ClusterSettings, store, run_splits, trained, after: dsl.PipelineTask | None = None,
                          gated: bool = True) -> None:
    """The assembly, then the evaluation; `gated`: only when the assembly made the whole ensemble (a batch run leaves
    it to the run that completes the last split: components/assemble_ensemble.py)."""
    assemble = assemble_ensemble(store=store, trained_splits=trained, run_splits=run_splits)
    on_cluster(assemble.set_display_name("Assemble the ensemble"), cluster, gpu=False)
    if after is not None:
        assemble.after(after)
    with dsl.If(assemble.outputs["whole"] == True) if gated else contextlib.nullcontext():  # noqa: E712
        evaluate = evaluate_ensemble(store=store, ensemble=assemble.outputs["ensemble"])
        on_cluster(evaluate.set_display_name("Evaluate the ensemble"), cluster, gpu=True)


def train_pass(cluster: ClusterSettings):
    """One pass of training over `splits` as a DAG of its own: a task after it can be its exit hook, which KFP's
    Argo compiler attaches to a DAG task but not to a loop's iterator task (backend/src/v2/compiler/argocompiler/
    dag.go: `task` passes `exitTemplate` to `dagTask`, which calls addExitTask; `iteratorTask` takes none)."""
    def body(store: str, splits: list[int]):  # list[int]: the loop item a number (test_backend_rules.py)
        train_splits(cluster, store, splits)
    return dsl.pipeline(name="train-pass")(body)


def heal_stage(cluster: ClusterSettings, remaining: int, gated: bool):
    """What runs after a pass of training, whatever its outcome: `ignore_upstream_failure()` makes the task an exit
    task (TriggerPolicy ALL_UPSTREAM_TASKS_COMPLETED), which KFP 2.17's Argo compiler turns into an Argo exit
    lifecycle hook of the pass's DAG task (argocompiler/dag.go, DAG: taskToExitTemplate; common.go, addExitTask). The
    hook runs when the pass ends Failed, when the root's assembly, which depends on `pass.Succeeded` (dag.go,
    depends), is Omitted; and Argo waits for a task's hooks before it evaluates what depends on it
    (workflow/controller/dag.go, evaluateDependsLogic: CheckAllHooksFullfilled).

    The stage lists the run's splits not at their target (`unfinished_splits`); the first stage (`gated`) does
    nothing more when there is none (the pass succeeded: the root assembles). Else it trains them again, each from
    its checkpoint, then the next stage, or, after `remaining` passes, assembles and evaluates: the assembly names
    the splits still lost."""
    again_pass = train_pass(cluster)
    after = heal_stage(cluster, remaining - 1, gated=False) if remaining > 1 else finish(cluster)

    def body(store: str, run_splits: list):
        plan = unfinished_splits(store=store, run_splits=run_splits).set_display_name("List the unfinished splits")
        on_cluster(plan, cluster, gpu=False)
        with dsl.If(plan.outputs["healing"] == True) if gated else contextlib.nullcontext():  # noqa: E712
            again = again_pass(store=store, splits=plan.outputs["todo"]).set_display_name(
                "Train the unfinished splits again")
            after(store=store, run_splits=run_splits).after(again).set_display_name(
                "Heal again" if remaining > 1 else "Assemble and evaluate").ignore_upstream_failure()
    return dsl.pipeline(name=f"heal-{remaining}")(body)


def finish(cluster: ClusterSettings):
    """The last heal stage's end: the assembly (which names a split still lost), then the evaluation."""
    def body(store: str, run_splits: list):
        assemble_and_evaluate(cluster, store, run_splits, run_splits)
    return dsl.pipeline(name="finish")(body)
