"""The report's sections, one module each: its analysis, its figures and how it fills its part
of the page (a :class:`~hiddencost.report.builder.SectionSpec`, ``SECTION``); :data:`SECTIONS`
is their order on the page."""

from hiddencost.report.builder import SectionSpec
from hiddencost.report.sections import (
    accuracy,
    calibration,
    classes,
    clip,
    confidence,
    crossmodal,
    delta,
    fidelity,
    findings,
    forgetting,
    mapping,
    prompts,
    summary,
)

SECTIONS: tuple[SectionSpec, ...] = (
    findings.SECTION, accuracy.SECTION, delta.SECTION, calibration.SECTION, confidence.SECTION,
    mapping.SECTION, classes.SECTION, forgetting.SECTION, prompts.SECTION, fidelity.SECTION,
    crossmodal.SECTION, clip.SECTION, summary.SECTION,
)
