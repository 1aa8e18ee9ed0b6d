"""The transfer methods of CLIP backbones (open_clip family), registered in :data:`CLIP_METHODS`.

==============  ===========================================================================
``vp``          frame prompt, one text per class: ILM-VP's ``single_tp_vp.py`` protocol,
                which the paper ran ("This is a photo of a {}.", δ = 0, SGD lr 40 with a
                cosine schedule and no warm-up, batch 16). Bahng et al.'s ``main_clip.py``,
                where the frame prompt comes from, differs: δ ~ N(0, 1), 1,000 warm-up
                steps, batch 256, a template without the period.
``ilm``         frame prompt, ILM over 81 templates per class (ILM-VP's ILM-TP-VP)
``zero-shot``   no prompt: the scores of ``vp``'s text table on the plain images
``lp``          a linear head on the image tower's embedding (the CNN ``lp``, cached features)
==============  ===========================================================================

Images go in as CLIP's own transform makes them (``preprocess: clip``, the references':
bicubic resize of the short side, centre crop, CLIP's mean/std); ``preprocess: squash`` is
hiddencost's earlier square resize. Class texts are the readable class names
(``class_texts: readable``) or the reference code's (``reference``, :mod:`hiddencost.clip.
class_texts`: Table 2's). Text tables are computed once per (backbone, texts, templates)
through the run's memo.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from hiddencost.clip.class_texts import CLASS_TEXTS, class_texts
from hiddencost.clip.text import DEFAULT_TEMPLATE, column_texts, ilm_templates, text_table
from hiddencost.data.transforms import ResizeNormalize
from hiddencost.prompting.clip_prompt import (
    CLIP_BATCH,
    CLIP_LR,
    ClipPromptRun,
    clip_predict,
    train_clip_prompt,
)
from hiddencost.prompting.methods import (
    LinearProbe,
    MethodOptions,
    TransferJob,
    TransferMethod,
    TransferOutcome,
    TransferSettings,
    Work,
    resized_storage,
)
from hiddencost.prompting.visual_prompt import TrainHistory
from hiddencost.registry import Registry


class ClipOptions(MethodOptions):
    """What every CLIP method reads: how images and class names go in."""

    preprocess: Literal["clip", "squash"] = Field(
        "clip", description="CLIP's transform (bicubic short side, centre crop; the "
        "references') or a square bilinear resize (hiddencost before December 2026)")
    class_texts: Literal["readable", "reference"] = Field(
        "readable", description=f"class names as readable text, or the reference code's "
        f"texts (Table 2's; they differ for {', '.join(CLASS_TEXTS)})")


class ClipPromptOptions(ClipOptions):
    """The options of CLIP prompting (``vp``)."""

    test_every_epoch: bool = Field(False, description="record the test accuracy after every "
                                   "epoch (curves only; the result is the final epoch's)")


class ClipMethod(TransferMethod):
    """Shared by the CLIP methods: images stored small and resized to the model's input,
    CLIP-normalised; the protocol's SGD lr 40 and batch 16."""

    default_lr: ClassVar[float] = CLIP_LR
    options: ClassVar[type[MethodOptions]] = ClipOptions

    def templates(self) -> tuple[str, ...]:
        """The templates of the method's text table (one: ``vp``'s)."""
        return (DEFAULT_TEMPLATE,)

    def default_batch_size(self, n_shot: int | None) -> int:
        return CLIP_BATCH

    def stored_image_size(self, s: TransferSettings) -> int:
        return resized_storage(s.inner_size, s.canvas_size)

    def input_size(self, s: TransferSettings) -> int:
        return s.canvas_size

    def image_fit(self, s: TransferSettings) -> str:
        return "crop" if s.options.preprocess == "clip" else "squash"

    def input_transform(self, s: TransferSettings, mean: tuple[float, ...],
                        std: tuple[float, ...]) -> nn.Module:
        # the 32-px tasks are stored at 32 and resized here: as PIL's bicubic under CLIP's
        mode = "pil-bicubic" if s.options.preprocess == "clip" else "bilinear"
        return ResizeNormalize(s.canvas_size, mean, std, mode)

    @staticmethod
    def validation_scores(job: TransferJob, prompt: nn.Module | None, pre: nn.Module,
                          text: torch.Tensor) -> torch.Tensor | None:
        """The scores of the job's validation examples (every text column), if it has them."""
        if job.validation is None:
            return None
        return clip_predict(job.backbone, prompt, pre, job.task.train_images[job.validation],
                            text.to(job.device), job.device)

    def class_names(self, job: TransferJob) -> tuple[str, ...]:
        """The class names the texts are made of, as the run's ``class_texts`` says."""
        return tuple(class_texts(job.task.name, job.task.class_names,
                                 job.settings.options.class_texts))

    def text(self, job: TransferJob) -> torch.Tensor:
        """The (T·K, D) text table of the task's classes, from the memo."""
        names, templates = self.class_names(job), self.templates()
        return job.memo(lambda: text_table(job.backbone, names, templates).cpu(),
                        "clip-text", names, templates)


class ClipIlmOptions(ClipPromptOptions):
    """ILM-TP-VP's options."""

    mapping_interval: int = Field(1, ge=1, description="re-map every k epochs")
    restrict_templates: bool = Field(False, description="map each class to one of its own "
                                     "template texts (the reference lets it take any)")


class ClipPrompting(ClipMethod):
    """A frame prompt trained against the text table: ``vp`` (one template) or ``ilm`` (81,
    re-mapped every ``mapping_interval`` epochs; ``restrict_templates`` keeps each class on its
    own name). The outcome's mapping is the chosen column per class (ilm only), named by its
    text."""

    learns_prompt = True

    def __init__(self, name: str, templates: Callable[[], Sequence[str]], many: bool,
                 display_name: str, marker: str, description: str) -> None:
        # templates: a function, as ilm's come from open_clip, imported on first use
        self.name, self._templates, self.description = name, templates, description
        self.display_name, self.marker = display_name, marker
        self.reads_templates = many
        self.options = ClipIlmOptions if many else ClipPromptOptions

    def work(self, s: TransferSettings, n_train: int, n_pool: int, n_test: int) -> Work:
        # ILM-TP-VP's column mapping is one forward of the subset every epoch (text encoding,
        # once per run, is not counted)
        passes = s.epochs if self.reads_templates else 0
        return Work(s.canvas_size, s.epochs * n_train, passes * n_train + n_test)

    def templates(self) -> tuple[str, ...]:
        return tuple(self._templates())

    def _mapping(self, s: TransferSettings) -> tuple[int, bool]:
        """(mapping interval, restricted templates): ``vp``'s one text per class is fixed."""
        o = s.options
        return (o.mapping_interval, o.restrict_templates) if self.reads_templates else (1, False)

    def fit(self, job: TransferJob) -> TransferOutcome:
        s, task, templates = job.settings, job.task, self.templates()
        text = self.text(job)
        pre = self.input_transform(s, job.mean, job.std).to(job.device)
        run = ClipPromptRun(task.train_images[job.subset], task.train_labels[job.subset], text,
                            task.num_classes, len(templates), s.epochs, s.batch_size,
                            s.seed, s.lr, *self._mapping(s), job.on_epoch, job.state)

        def test_accuracy(prompt: nn.Module, columns: torch.Tensor) -> float:
            scores = clip_predict(job.backbone, prompt, pre, task.test_images,
                                  text.to(job.device), job.device)[:, columns.cpu()]
            return float((scores.argmax(1) == task.test_labels).double().mean())

        prompt, columns, history = train_clip_prompt(
            job.backbone, pre, run, job.device, job.precision,
            evaluate=test_accuracy if s.options.test_every_epoch else None)
        scores = clip_predict(job.backbone, prompt, pre, task.test_images, text.to(job.device),
                              job.device)
        tensors = {"prompt.delta": prompt.delta.detach().cpu()}
        held = self.validation_scores(job, prompt, pre, text)
        held = None if held is None else held[:, columns]
        if not self.reads_templates:
            return TransferOutcome(scores[:, columns], history, tensors, validation_logits=held)
        return TransferOutcome(scores[:, columns], history, tensors, columns.tolist(),
                               history.mappings, column_texts(self.class_names(job), templates),
                               validation_logits=held)


class ZeroShot(ClipMethod):
    """CLIP's zero-shot classifier with ``vp``'s text table: nothing is trained (the history
    is empty)."""

    name = "zero-shot"
    description = "CLIP zero-shot: no prompt, one text per class"
    display_name = "zero-shot"
    marker = "x"

    def work(self, s: TransferSettings, n_train: int, n_pool: int, n_test: int) -> Work:
        return Work(s.canvas_size, 0, n_test)

    def fit(self, job: TransferJob) -> TransferOutcome:
        pre = self.input_transform(job.settings, job.mean, job.std).to(job.device)
        text = self.text(job)
        scores = clip_predict(job.backbone, None, pre, job.task.test_images,
                              text.to(job.device), job.device)
        return TransferOutcome(scores, TrainHistory(), {},
                               validation_logits=self.validation_scores(job, None, pre, text))


#: The transfer methods of open_clip backbones by name.
CLIP_METHODS: Registry[TransferMethod] = Registry("CLIP transfer method")

for _method in (
    ClipPrompting("vp", lambda: (DEFAULT_TEMPLATE,), False, "CLIP-VP", "o",
                  "CLIP VP: frame prompt, one text per class"),
    ClipPrompting("ilm", ilm_templates, True, "ILM-TP-VP", "s",
                  "CLIP ILM-TP-VP: frame prompt, ILM over 81 templates"),
    ZeroShot(),
    LinearProbe(),  # the image tower's embedding f(x) is the feature (ClipTowers)
):
    CLIP_METHODS.add(_method.name, _method)
