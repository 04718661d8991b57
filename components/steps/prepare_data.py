"""Component: make the split plan from a listing of the data set's classes, record the run's settings; output the
split ids to train (each split's shard is built inside the fan-out, by `prepare_split_data`)."""

from kfp import dsl

from components.settings import ClusterSettings


@dsl.component(base_image=ClusterSettings().image, install_kfp_package=False)
def prepare_data(store: str, dataset: str, source: str, resolution: int, classes_per_split: int, num_classes: int,
                 images_per_class: int, steps: int, batch_size: int, checkpoint_every: int, seed: int, width: float,
                 d_width: float, d_dropout: float, d_noise_std: float, d_fake_class_loss: bool, mode_seeking: float,
                 augment: str, split_ids: list, samples_per_class: int, pairs: int, classifier_steps: int,
                 classifier: str, class_list: str) -> list:
    from components.experiment import prepare_experiment
    from components.settings import RunSettings
    from components.steps import run_step

    return run_step("prepare-data", lambda: prepare_experiment(RunSettings(
        store=store, dataset=dataset, source=source, resolution=resolution, classes_per_split=classes_per_split,
        num_classes=num_classes, images_per_class=images_per_class, steps=steps, batch_size=batch_size,
        checkpoint_every=checkpoint_every, seed=seed, width=width, d_width=d_width, d_dropout=d_dropout,
        d_noise_std=d_noise_std, d_fake_class_loss=d_fake_class_loss, mode_seeking=mode_seeking, augment=augment,
        split_ids=split_ids, samples_per_class=samples_per_class, pairs=pairs, classifier_steps=classifier_steps,
        classifier=classifier, class_list=class_list)))
