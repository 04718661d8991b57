"""The ensemble as one KServe model: "n images of class k" in the Open Inference Protocol v2.

Request inputs, each of shape [1]: `class` (INT64, a class id; or BYTES, a class name), `n` (INT64, 1..max_images)
and optionally `seed` (INT64, 0..2**63-1; a random one when absent). Output: `images`, UINT8 of shape [n, H, W, C].
The response's parameters say what was drawn: class, class_name, split, step and the seed, so that any answer can be
drawn again. `load()` reads only the ensemble's manifest (and the evaluation's figures, when the store has them);
a split's generator is read on the first request for one of its classes.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import secrets
import time
import uuid

import kserve
import numpy as np
import torch
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from pydantic import ValidationError

from acgan.checkpoint import CorruptCheckpoint, load_checkpoint
from acgan.ensemble import EnsembleManifest, EnsembleMember, load_ensemble
from acgan.errors import UserError, explain, rerun_command
from acgan.layout import ENSEMBLE_KEY, GENERATOR_FILE, META_FILE, METRICS_KEY
from acgan.model import Generator
from acgan.sampling import generator_from_files
from acgan.serving.batching import Batcher, GeneratorCache, Unavailable, default_forward_batch
from acgan.serving.protocol import QUOTED_CHARS, BadRequest, quoted
from acgan.settings import ServeSettings
from acgan.store import Store, read_json

log = logging.getLogger(__name__)
INPUTS = {"class": ("INT64", "BYTES"), "n": ("INT64",), "seed": ("INT64",)}
OUTPUT = "images"
RELOAD_SECONDS = 2.0  # while the store has no ensemble, a readiness probe looks again at most this often
EVAL_FIGURES = ("accuracy", "real_accuracy", "ms_ssim", "ms_ssim_se", "real_ms_ssim", "real_ms_ssim_se",
                "low_diversity")


def _one_value(request: InferRequest, name: str):
    """The single value of input `name` (None when absent), checked against the datatypes it may have."""
    found = [i for i in request.inputs if i.name == name]
    if not found:
        return None
    if len(found) > 1:
        raise BadRequest(f"input {name!r} is given {len(found)} times: give it once")
    given = found[0]
    if given.datatype not in INPUTS[name]:
        raise BadRequest(f"input {name!r} has datatype {given.datatype[:QUOTED_CHARS]}: use "
                         f"{' or '.join(INPUTS[name])}")
    data = given.data
    if list(given.shape) != [1] or not isinstance(data, list) or len(data) != 1:
        values = len(data) if isinstance(data, list) else "no"
        raise BadRequest(f"input {name!r} has shape {quoted(list(given.shape))} and {values} value(s): give one value, "
                         "shape [1]")
    value = data[0]
    if given.datatype == "BYTES":
        if not isinstance(value, str):
            raise BadRequest(f"input {name!r}: {quoted(value)} is not a string (BYTES): give a class name")
    elif isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"input {name!r}: {quoted(value)} is not an integer (INT64)")
    return value


class EnsembleModel(kserve.Model):
    """Every class of the store's ensemble behind one model name: each request is routed to the generator of the
    split that owns its class."""

    def __init__(self, settings: ServeSettings, store: Store):
        super().__init__(settings.model_name)
        self.settings, self.store = settings, store
        self.device = torch.device(settings.device)
        self.manifest: EnsembleManifest | None = None
        self.figures: dict[int, dict] = {}  # class id -> the evaluation's figures of it
        self.problem: str | None = None  # why the model is not ready
        self._by_name: dict[str, EnsembleMember] = {}
        self._looked = 0.0
        self._reload = asyncio.Lock()
        self.cache = GeneratorCache(self._load_split, settings.max_loaded)
        self.batcher = Batcher(settings.batch_wait_ms / 1000, self._forward_batch, settings.max_queued_images)

    # --- loading -------------------------------------------------------------------------------------------------

    def load(self) -> bool:
        """Reads the ensemble's manifest and, when the store has one, the evaluation's per-class figures."""
        self._looked = time.monotonic()
        try:
            manifest = load_ensemble(self.store)
        except UserError as e:
            manifest, self.problem = None, explain(e)
        else:
            if manifest is None:
                self.problem = (f"store {self.store.uri} has no ensemble ({ENSEMBLE_KEY}) yet: assemble it with "
                                f"{rerun_command(self.store.uri)}; this server serves it "
                                "once it is there")
        if manifest is None:
            self.ready = False
            return False
        self.manifest, self.problem = manifest, None
        self._by_name = {m.name: m for m in manifest.classes}
        self.figures = self._evaluation_figures()
        self.ready = True
        return True

    def _evaluation_figures(self) -> dict[int, dict]:
        try:
            if not self.store.exists(METRICS_KEY):
                return {}
            classes = read_json(self.store, METRICS_KEY).get("classes", [])
            return {int(c["id"]): {k: c[k] for k in EVAL_FIGURES if k in c} for c in classes}
        except (UserError, KeyError, TypeError, ValueError, AttributeError) as e:
            log.warning("the evaluation's figures are left out: %s/%s is unreadable (%s)", self.store.uri,
                        METRICS_KEY, str(e)[:200])
            return {}

    async def healthy(self) -> bool:
        """Ready once the store has an ensemble; until then each probe (at most every RELOAD_SECONDS) looks again.
        Raises Unavailable, naming what is missing, so that every endpoint that asks says why."""
        if not self.ready:
            async with self._reload:
                if not self.ready and time.monotonic() - self._looked >= RELOAD_SECONDS:
                    if await asyncio.to_thread(self.load):
                        log.info("the store's ensemble is there now: serving %d classes", len(self.manifest.classes))
        if not self.ready:
            raise Unavailable(self.problem)
        return True

    def _load_split(self, split: int) -> Generator:
        """The generator of `split`'s checkpoint in the manifest, verified, in eval mode on the device (a thread)."""
        member = next(m for m in self.manifest.classes if m.split == split)
        classes = [m.class_id for m in self.manifest.classes if m.split == split]
        try:
            files = load_checkpoint(self.store, split, member.step, [GENERATOR_FILE, META_FILE])
            G = generator_from_files(files, self.device)[0]
        except (CorruptCheckpoint, UserError, ValidationError, ValueError, RuntimeError, KeyError) as e:
            raise Unavailable(f"split {split} (classes {classes[0]}..{classes[-1]}) cannot be served: its checkpoint "
                              f"{member.checkpoint} does not load ({explain(e) or str(e)[:300]}); run "
                              f"{rerun_command(self.store.uri)} to retrain and re-assemble it") from None
        log.info("loaded split %d's generator (step %d) on %s", split, member.step, self.device)
        return G

    def _forward_batch(self, G: Generator) -> int:
        return self.settings.forward_batch or default_forward_batch(self.device, G.cfg.resolution)

    # --- the protocol --------------------------------------------------------------------------------------------

    def get_input_types(self) -> list[dict]:
        return [{"name": "class", "datatype": "INT64", "shape": [1]},  # or BYTES: a class name
                {"name": "n", "datatype": "INT64", "shape": [1]},
                {"name": "seed", "datatype": "INT64", "shape": [1]}]

    def get_output_types(self) -> list[dict]:
        m = self.manifest
        return [{"name": OUTPUT, "datatype": "UINT8", "shape": [-1, m.resolution, m.resolution, m.channels]}]

    def metadata(self) -> dict:
        """The protocol's model metadata, and in `parameters` what a client needs to choose: every datatype each
        input accepts (the metadata tensor has room for one: `class` is INT64 there, and BYTES for a class name),
        every class with its split, checkpoint step and (when evaluated) its figures. No `versions`: the spec's
        field is optional, for models that cannot be asked for a version."""
        m = self.manifest
        splits = sorted({c.split: c.step for c in m.classes}.items())
        return {"name": self.name, "platform": "pytorch", "inputs": self.get_input_types(),
                "outputs": self.get_output_types(),
                "parameters": {"input_datatypes": {name: list(types) for name, types in INPUTS.items()},
                               "resolution": m.resolution, "channels": m.channels, "max_images":
                               self.settings.max_images, "evaluated": bool(self.figures),
                               "splits": [{"split": s, "step": step} for s, step in splits],
                               "classes": [{"id": c.class_id, "name": c.name, "split": c.split, "step": c.step,
                                            **self.figures.get(c.class_id, {})} for c in m.classes]}}

    def _class_of(self, value: int | str) -> EnsembleMember:
        classes = self.manifest.classes
        if isinstance(value, str):
            if value in self._by_name:
                return self._by_name[value]
            if not (value.isascii() and value.isdigit()):  # str.isdigit() is also true of "²" and "٣"
                close = difflib.get_close_matches(value, self._by_name, n=3) if len(value) <= QUOTED_CHARS else []
                hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
                raise BadRequest(f"no class named {quoted(value)}{hint}: GET /v2/models/{self.name} lists the "
                                 "classes")
            if len(value) > 18:  # beyond any class (and int() refuses 4,301 digits)
                raise BadRequest(f"class {quoted(value)} is out of range: the ensemble has classes "
                                 f"0..{len(classes) - 1}")
            value = int(value)
        if not 0 <= value < len(classes):
            raise BadRequest(f"class {quoted(value)} is out of range: the ensemble has classes 0..{len(classes) - 1}")
        return self.manifest.member(value)

    async def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise BadRequest(f"use the Open Inference Protocol v2: POST /v2/models/{self.name}/infer")
        unknown = sorted({i.name for i in payload.inputs} - set(INPUTS))
        if unknown:
            raise BadRequest(f"unknown input {quoted(unknown[0])}: the inputs are class (INT64 id or BYTES name), n "
                             "(INT64) and optionally seed (INT64)")
        wrong = [o.name for o in payload.request_outputs or [] if o.name != OUTPUT]
        if wrong:
            raise BadRequest(f"unknown output {quoted(wrong[0])}: the only output is {OUTPUT!r}")
        cls, n, seed = (_one_value(payload, name) for name in INPUTS)
        if cls is None or n is None:
            raise BadRequest(f"missing input {'class' if cls is None else 'n'!r}: give class and n (and optionally "
                             "seed), each of shape [1]")
        if not 1 <= n <= self.settings.max_images:
            raise BadRequest(f"n {quoted(n)}: ask for 1 to {self.settings.max_images} images (the server's "
                             "--max-images)")
        if seed is None:
            seed = secrets.randbits(63)
        elif not 0 <= seed < 2**63:
            raise BadRequest(f"seed {quoted(seed)}: give a seed from 0 to 2**63-1")
        member = self._class_of(cls)
        G = await self.cache.get(member.split)
        images = await self.batcher.draw(member.split, G, member.local_index, n, seed)
        images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # (n, H, W, C), the protocol's layout
        output = InferOutput(OUTPUT, list(images.shape), "UINT8", images)
        return InferResponse(payload.id or uuid.uuid4().hex, self.name, [output],
                             parameters={"class": member.class_id, "class_name": member.name, "split": member.split,
                                         "step": member.step, "seed": seed},
                             use_binary_outputs=payload.use_binary_outputs, requested_outputs=payload.request_outputs)
