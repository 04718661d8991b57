"""What the analyses read from the stream, one class per part (`stream.Part`): an analysis names the parts it reads
(`Analysis.reads`) and an evaluation gathers only the parts its chosen analyses read. Each part keeps small outputs
per split and, after `finish`, holds its results as typed attributes, its entries of each class's record and of
`computed_on`. Results per class are in the classes' order (their ids), whatever the stream's."""

from __future__ import annotations

import logging

import torch

from acgan.collapse import collapse_threshold, collapsing
from acgan.evaluation.inputs import ImageFile, training_curves
from acgan.evaluation.stream import Context, Split
from acgan.metrics import compute_accuracy, compute_class_ms_ssim
from acgan.metrics.cas import compute_cas
from acgan.metrics.classifier import HELDOUT_FRACTION, classify, heldout_mask
from acgan.metrics.classifier_file import file_classifier_info
from acgan.metrics.density_coverage import compute_density_coverage
from acgan.metrics.discriminability import study_resolutions
from acgan.metrics.fidelity import frechet_accumulator
from acgan.metrics.intra_fid import compute_intra_class_fid
from acgan.metrics.precision_recall import compute_precision_recall

log = logging.getLogger(__name__)
# The metrics computed per class in the classifier's feature space, in each class record's order; their k (the
# neighbour whose distance is a point's radius) as their authors chose.
CLASS_FEATURE_METRICS = ("precision", "recall", "density", "coverage", "fid")
PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5


class Accuracies:
    """The classifier's predictions of the samples and the real images at the plan's size and each smaller one (the
    resolution study); one pass at full size also gives the samples' logits (Inception Score) and FID's running sums
    of both sides' features, so that the images themselves can be dropped. After `finish`: `by_resolution` and
    `real_by_resolution` (size -> overall accuracy, per-class accuracies), `logits`, `fid_sums` and the classifier's
    `info` (for a user's file, with its accuracy on the real images streamed)."""

    classifier = True

    def __init__(self, context: Context):
        self.context, self.sizes = context, study_resolutions(context.plan.resolution)
        self.fid_sums = frechet_accumulator(context.model.feature_width)  # no features kept
        self.predicted = {size: [] for size in self.sizes}
        self.real_predicted = {size: [] for size in self.sizes}
        self.kept_logits, self.labels, self.real_labels = [], [], []

    def add(self, split: Split) -> None:
        full, real_full = split.classified
        self.kept_logits.append(full.logits)
        self.fid_sums.update(real_full.features, real=True)
        self.fid_sums.update(full.features, real=False)
        self.predicted[self.sizes[0]].append(full.predicted)
        self.real_predicted[self.sizes[0]].append(real_full.predicted)
        for size in self.sizes[1:]:
            self.predicted[size].append(classify(split.model, split.samples, size=size).predicted)
            self.real_predicted[size].append(classify(split.model, split.real, size=size).predicted)
        self.labels.append(split.sample_labels.cpu())
        self.real_labels.append(split.real_labels.cpu())

    def finish(self) -> None:
        plan, settings = self.context.plan, self.context.settings
        labels, real_labels = torch.cat(self.labels), torch.cat(self.real_labels)
        self.by_resolution = {size: compute_accuracy(torch.cat(self.predicted[size]), labels, plan.num_classes)
                              for size in self.sizes}
        self.real_by_resolution = {size: compute_accuracy(torch.cat(self.real_predicted[size]), real_labels,
                                                          plan.num_classes) for size in self.sizes}
        self.logits = torch.cat(self.kept_logits)
        self.resolution = plan.resolution
        self.info = self.context.info or file_classifier_info(  # a user's file: scored on the real images streamed
            self.context.model, settings.classifier, plan.channels, plan.resolution, len(real_labels),
            self.real_by_resolution[plan.resolution][0])

    @property
    def per_class_accuracy(self) -> list[float]:
        return self.by_resolution[self.resolution][1]

    def per_class(self, c: int) -> dict:
        return {"accuracy": self.per_class_accuracy[c],
                "accuracy_by_resolution": {str(size): acc[1][c] for size, acc in self.by_resolution.items()},
                "real_accuracy": self.real_by_resolution[self.resolution][1][c],
                "real_accuracy_by_resolution": {str(size): acc[1][c] for size, acc in self.real_by_resolution.items()}}

    def computed_on(self) -> dict:
        return {"classifier": self.info.model_dump()}


class Diversity:
    """Mean MS-SSIM of each class's pairs of samples and of real images, with its standard error; each class's pairs
    come from a generator seeded by its id, so a split alone gives the same pairs (the slow part). After `finish`:
    `samples`, `samples_se`, `real`, `real_se`, `real_max`, `threshold` (where a class counts as collapsing) and the
    training `curves` (per class: steps and the MS-SSIM of the split's fixed samples)."""

    classifier = False

    def __init__(self, context: Context):
        self.context = context
        self.found: dict[str, dict[int, float]] = {"samples": {}, "samples_se": {}, "real": {}, "real_se": {}}

    def add(self, split: Split) -> None:
        settings = self.context.settings
        for name, images, labels in (("samples", split.samples, split.sample_labels),
                                     ("real", split.real, split.real_labels)):
            means, errors = compute_class_ms_ssim(images, labels, split.members, settings.pairs, settings.seed)
            self.found[name].update(zip(split.members, means))
            self.found[f"{name}_se"].update(zip(split.members, errors))

    def finish(self) -> None:
        store, settings = self.context.store, self.context.settings
        self.samples, self.samples_se, self.real, self.real_se = (
            [self.found[name][c.id] for c in self.context.plan.classes] for name in self.found)
        self.real_max = max(self.real)
        # --ms-ssim-threshold, else the collapse alarm's threshold (the real data's least diverse class, measured as
        # training measures its samples), so that `acgan status`, the report and the summary draw one line; the
        # evaluation's own least diverse real class for a store without it.
        self.threshold = settings.ms_ssim_threshold or collapse_threshold(store) or self.real_max
        self.curves = training_curves(store, self.context.plan)

    def per_class(self, c: int) -> dict:
        return {"ms_ssim": self.samples[c], "ms_ssim_se": self.samples_se[c],
                "real_ms_ssim": self.real[c], "real_ms_ssim_se": self.real_se[c],
                # As alike as the least diverse real class: collapsing (acgan/collapse.py).
                "low_diversity": collapsing(self.samples[c], self.threshold)}

    def computed_on(self) -> dict:
        return {"collapse_threshold": self.threshold, "pairs_per_class": self.context.settings.pairs,
                "ms_ssim_data_range": 255,
                "ms_ssim_standard_error": "per class, the standard deviation of the pair scores over the square root "
                                          "of the number of pairs"}


class ClassFeatures:
    """Each class's precision, recall, density, coverage and FID (`CLASS_FEATURE_METRICS`) in the classifier's
    feature space: its samples against its real images. After `finish`: `values` (name -> per class)."""

    classifier = True

    def __init__(self, context: Context):
        self.context, self.found = context, {}

    def add(self, split: Split) -> None:
        full, real_full = split.classified
        real, real_labels = real_full.features, split.real_labels.cpu()
        samples, sample_labels = full.features, split.sample_labels.cpu()
        fids = compute_intra_class_fid(real, real_labels, samples, sample_labels, split.members)
        for c, fid in zip(split.members, fids):
            mine, theirs = samples[sample_labels == c], real[real_labels == c]
            precision, recall = compute_precision_recall(theirs, mine, PRECISION_RECALL_K)
            density, coverage = compute_density_coverage(theirs, mine, DENSITY_COVERAGE_K)
            self.found[c] = dict(zip(CLASS_FEATURE_METRICS, (precision, recall, density, coverage, fid)))

    def finish(self) -> None:
        self.values = {name: [self.found[c.id][name] for c in self.context.plan.classes]
                       for name in CLASS_FEATURE_METRICS}

    def per_class(self, c: int) -> dict:
        return self.found[c]

    def computed_on(self) -> dict:
        return {}


class Cas:
    """Classification Accuracy Score's inputs, gathered as the stream goes (acgan/metrics/cas.py): every sample, and
    the real images' held-out part (those the evaluation classifier, where it was trained on this store, did not train
    on: the same seed and fraction), each in an `ImageFile`; `finish` trains on the samples and tests on those. After
    it: `accuracy` and `by_class`."""

    classifier = False

    def __init__(self, context: Context):
        plan, settings = context.plan, context.settings
        # The real images' labels in real_by_split's order (each split's classes, `used` images of each), as the
        # classifier's training saw them: its held-out choice depends on them only.
        labels = torch.cat([torch.full((context.used[c],), c) for members in plan.splits for c in members])
        self.heldout = heldout_mask(labels, plan.num_classes, HELDOUT_FRACTION,
                                    torch.Generator().manual_seed(settings.seed))
        self.context, self.start = context, 0
        self.samples, self.real = context.hold.enter_context(ImageFile()), context.hold.enter_context(ImageFile())

    def add(self, split: Split) -> None:
        chosen = self.heldout[self.start:self.start + len(split.real_labels)].to(split.real.device)
        self.start += len(split.real_labels)
        self.samples.append(split.samples, split.sample_labels)
        self.real.append(split.real[chosen], split.real_labels[chosen])

    def finish(self) -> None:
        settings = self.context.settings
        log.info("CAS: training a classifier on the samples (%d steps)", settings.cas_training_steps)
        self.accuracy, self.by_class = compute_cas(*self.samples.mapped(), *self.real.mapped(),
                                                   self.context.plan.num_classes, settings.cas_training_steps,
                                                   settings.seed, self.context.device)

    def per_class(self, c: int) -> dict:
        return {"cas": self.by_class[c]}

    def computed_on(self) -> dict:
        return {}
