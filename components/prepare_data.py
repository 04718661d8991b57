"""Component: make the split plan from a listing of the data set's classes, record the run's settings; output the
split ids to train (each split's shard is built inside the fan-out, by `prepare_split_data`).

The output is `list[int]`, not `list`: the loop item is then NUMBER_INTEGER, the type `prepare_split_data(split: int)`
takes. From a plain `list` the item is STRING, and the KFP backend's iteration driver would turn split 0 into "0",
which the container driver refuses for an int input (tests/backend/test_backend_rules.py)."""

from kfp import dsl

from acgan.cluster_settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def prepare_data(store: str, preset: str, dataset: str, source: str, resolution: int, classes_per_split: int,
                 num_classes: int, images_per_class: int, steps: int, batch_size: int, lr: float, checkpoint_every: int,
                 seed: int, noise_dim: int, width: float, d_width: float, d_dropout: float, d_noise_std: float,
                 d_fake_class_loss: bool, mode_seeking: float, augment: str, ema_kimg: float, ema_rampup: float,
                 g_layout: str, objective: str, compile: str, split_ids: list,
                 samples_per_class: int, pairs: int, classifier_steps: int, cas_steps: str, classifier: str,
                 analyses: list,
                 real_per_class: int, ms_ssim_threshold: str, accuracy_threshold: float, class_list: str,
                 include_complete: bool) -> list[int]:
    run_parameters = dict(locals())  # exactly the parameters, one per RunSettings field (tests/pipelines)
    from acgan.experiment import prepare_experiment
    from acgan.settings import RunSettings
    from components import run_step

    return run_step("prepare-data", lambda: prepare_experiment(RunSettings(**run_parameters)))
