"""A ceiling on the size of a run's Argo workflow, from Argo's packer rules over the compiled pipeline
(pipelines/workflow_size.py)."""

import base64
import gzip
import json

import pytest
import yaml

from acgan.cluster_settings import ClusterSettings
from pipelines.runs import compile_pipeline
from pipelines.workflow_size import SAMPLE_SPLITS, _compressed, nodes_per_split, size_model, split_nodes


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    path = compile_pipeline(ClusterSettings(), tmp_path_factory.mktemp("size") / "acgan-ensemble.yaml")
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform


def test_a_split_is_eighteen_argo_nodes_as_kfps_compiler_nests_it(compiled):
    """An iteration's DAG task, its driver and its DAG; per container task of the loop body (the split's data and
    its training) a driver, an executor DAG and the executor's pod: nine templates, each under a Retry node."""
    spec, platform = compiled
    assert nodes_per_split(spec) == 18
    nodes = split_nodes(spec, platform, "wf", 7, "root.train-pass.for-loop-1")
    assert len(nodes) == 18 and sum(n["type"] == "Retry" for n in nodes) == 9
    assert sum(n["type"] == "Pod" for n in nodes) == 5  # iteration-item-driver, 2 drivers, 2 executors


def test_the_size_model_is_the_compressed_nodes_as_argos_packer_writes_them(compiled):
    """packer.go, compressWorkflow: status.compressedNodes = base64(gzip(JSON of the nodes)). The linear model
    (bytes per split measured on SAMPLE_SPLITS) against the packer's rule applied to three times as many splits."""
    spec, platform = compiled
    fixed, per_split = size_model(spec, platform, passes=1)
    splits = 3 * SAMPLE_SPLITS
    nodes = {n["id"]: n for s in range(splits) for n in split_nodes(spec, platform, "acgan-ensemble-abcde", s,
                                                                      "root.train-pass.for-loop-1")}
    packed = len(base64.b64encode(gzip.compress(json.dumps(dict(sorted(nodes.items())),
                                                           separators=(",", ":")).encode())))
    assert packed == _compressed(spec, platform, splits)
    estimate = fixed + per_split * splits - len(json.dumps(spec)) - len(json.dumps(platform))
    assert abs(estimate - packed) < 0.05 * packed
