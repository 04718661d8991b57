"""The cluster's settings (where a run's tasks run) as flags of the cluster commands, and as cluster.json records
them."""

import json

from pydantic import Field

from acgan.cluster_settings import ClusterSettings
from acgan_cli.flags import settings_flags, validated
from acgan_cli.main import Parser, build_parser


def test_the_cluster_flags_reach_the_cluster_settings():
    args = build_parser().parse_args(["compile", "--image", "registry.example.com/acgan-ensemble:1",
                                          "--node-selector", "pool=h100", "--node-selector", "zone=a",
                                          "--gpu-toleration", "none", "--train-memory", "64G", "--retries", "2"])
    cluster = validated(args, ClusterSettings)
    assert cluster.node_selector == {"pool": "h100", "zone": "a"} and cluster.gpu_toleration is None
    assert (cluster.train_memory, cluster.retries, cluster.parallelism) == ("64G", 2, 16)
    recorded = ClusterSettings.model_validate(json.loads(json.dumps(cluster.model_dump())))  # as cluster.json
    assert recorded == cluster


def test_a_new_cluster_setting_is_one_field():
    """A field added to ClusterSettings (here on a test-only copy) is a flag of the cluster commands with its
    description and default, and reaches the validated settings: no other edit (the pipeline reads it where it is
    used, on_cluster in pipelines/acgan_ensemble.py)."""
    class Extended(ClusterSettings):
        priority_class: str = Field("acgan-low", description="a test-only cluster setting: the pods' PriorityClass")

    parser = Parser(prog="acgan test")
    flag = settings_flags(parser, Extended)["priority_class"]
    assert flag.option_strings == ["--priority-class"]
    assert flag.help == "a test-only cluster setting: the pods' PriorityClass (default acgan-low)"
    assert validated(parser.parse_args(["--priority-class", "high"]), Extended).priority_class == "high"
