"""Synthetic FHIR R4 patients of France and Quebec, and vaccination campaigns
(``campaign``), for the demo and the benchmarks."""

from coffre.synth.generator import generate_bundles, generate_patient_bundle
from coffre.synth.shared import generate_shared_bundle

__all__ = ["generate_bundles", "generate_patient_bundle", "generate_shared_bundle"]
