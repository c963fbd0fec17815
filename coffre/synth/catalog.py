"""The clinical vocabulary of the generator: SNOMED CT, LOINC, ATC and CVX codes.

Codings carry the code system's own (English) display; the ``text`` beside them is the
French label a clinician in France or Quebec would read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from coffre.synth.builders import Code

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
CVX = "http://hl7.org/fhir/sid/cvx"
_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"


@dataclass(frozen=True, slots=True)
class Drug:
    code: Code
    text: str
    dosage: str
    as_needed: bool = False


@dataclass(frozen=True, slots=True)
class Measure:
    """What an Observation measures, and in which unit."""

    code: Code
    text: str
    unit: str
    ucum: str


@dataclass(frozen=True, slots=True)
class Lab:
    """A laboratory test that follows a chronic condition, with its usual results."""

    measure: Measure
    untreated: tuple[float, float]
    treated: tuple[float, float]


@dataclass(frozen=True, slots=True)
class Chronic:
    """A lasting condition: onset between two ages, in ``prevalence`` of people by the last."""

    code: Code
    text: str
    onset: tuple[int, int]
    prevalence: float
    drugs: tuple[Drug, ...]
    lab: Lab | None = None


@dataclass(frozen=True, slots=True)
class Acute:
    """A passing problem, seen in one encounter class, lasting a range of days."""

    code: Code
    text: str
    encounter_class: str
    ages: tuple[int, int]
    days: tuple[int, int]
    drug: Drug | None = None
    child_drug: Drug | None = None
    fever: bool = False
    since: date = date.min

    def drug_for(self, age: int) -> Drug | None:
        return self.child_drug if age < 12 and self.child_drug is not None else self.drug


def snomed(code: str, display: str) -> Code:
    return Code(SNOMED, code, display)


def loinc(code: str, display: str) -> Code:
    return Code(LOINC, code, display)


def atc(code: str, display: str) -> Code:
    return Code(ATC, code, display)


def cvx(code: str, display: str) -> Code:
    return Code(CVX, code, display)


AMBULATORY = Code(_ACT_CODE, "AMB", "ambulatory")
EMERGENCY = Code(_ACT_CODE, "EMER", "emergency")
INPATIENT = Code(_ACT_CODE, "IMP", "inpatient encounter")

CHECK_UP = (snomed("185349003", "Encounter for check up (procedure)"), "Bilan de santé")
SYMPTOM = (snomed("185345009", "Encounter for symptom (procedure)"), "Consultation pour symptômes")
FOLLOW_UP = (snomed("390906007", "Follow-up encounter (procedure)"), "Consultation de suivi")
ER_VISIT = (snomed("50849002", "Emergency room admission (procedure)"), "Passage aux urgences")
ADMISSION = (snomed("32485007", "Hospital admission (procedure)"), "Hospitalisation")

SPECIALTIES = {
    "general": snomed("394814009", "General practice (specialty)"),
    "emergency": snomed("773568002", "Emergency medicine (specialty)"),
    "internal": snomed("419192003", "Internal medicine (specialty)"),
}

VITAL_SIGNS = Code(_OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")
LABORATORY = Code(_OBSERVATION_CATEGORY, "laboratory", "Laboratory")
ACTIVE = Code(_CONDITION_CLINICAL, "active", "Active")
RESOLVED = Code(_CONDITION_CLINICAL, "resolved", "Resolved")
CONFIRMED = Code(
    "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"
)
PROBLEM_LIST = Code(_CONDITION_CATEGORY, "problem-list-item", "Problem List Item")
DIAGNOSIS = Code(_CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")

WEIGHT = Measure(loinc("29463-7", "Body weight"), "Poids", "kg", "kg")
HEIGHT = Measure(loinc("8302-2", "Body height"), "Taille", "cm", "cm")
BMI = Measure(loinc("39156-5", "Body mass index (BMI) [Ratio]"), "IMC", "kg/m²", "kg/m2")
HEART_RATE = Measure(loinc("8867-4", "Heart rate"), "Fréquence cardiaque", "/min", "/min")
TEMPERATURE = Measure(loinc("8310-5", "Body temperature"), "Température", "°C", "Cel")
SYSTOLIC = Measure(
    loinc("8480-6", "Systolic blood pressure"), "Pression systolique", "mmHg", "mm[Hg]"
)
DIASTOLIC = Measure(
    loinc("8462-4", "Diastolic blood pressure"), "Pression diastolique", "mmHg", "mm[Hg]"
)
BLOOD_PRESSURE = (
    loinc("85354-9", "Blood pressure panel with all children optional"),
    "Tension artérielle",
)
HBA1C = Measure(
    loinc("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"), "Hémoglobine glyquée", "%", "%"
)
CHOLESTEROL = Measure(
    loinc("14647-2", "Cholesterol [Moles/volume] in Serum or Plasma"),
    "Cholestérol total",
    "mmol/L",
    "mmol/L",
)


@dataclass(frozen=True, slots=True)
class Vaccine:
    code: Code
    text: str


HEXAVALENT = Vaccine(cvx("146", "DTaP,IPV,Hib,HepB"), "Vaccin hexavalent DTCaP-Hib-HépB")
PNEUMOCOCCAL = Vaccine(
    cvx("133", "Pneumococcal conjugate PCV 13"), "Vaccin pneumococcique conjugué 13-valent"
)
MENINGOCOCCAL_C = Vaccine(cvx("103", "meningococcal C conjugate"), "Vaccin méningococcique C")
MMR = Vaccine(cvx("03", "MMR"), "Vaccin rougeole-oreillons-rubéole (ROR)")
DTAP_IPV = Vaccine(cvx("130", "DTaP-IPV"), "Rappel diphtérie-tétanos-coqueluche-polio")
HPV = Vaccine(cvx("165", "HPV9"), "Vaccin papillomavirus 9-valent")
TDAP = Vaccine(cvx("115", "Tdap"), "Rappel dTcaP de l'adulte")
INFLUENZA = (
    Vaccine(
        cvx("140", "Influenza, seasonal, injectable, preservative free"),
        "Vaccin antigrippal saisonnier",
    ),
    Vaccine(cvx("141", "Influenza, seasonal, injectable"), "Vaccin antigrippal saisonnier"),
)
COVID_19 = (
    Vaccine(
        cvx(
            "208",
            "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, "
            "30 mcg/0.3mL dose",
        ),
        "Vaccin à ARNm contre la COVID-19 (Pfizer-BioNTech)",
    ),
    Vaccine(
        cvx(
            "207",
            "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, "
            "100 mcg/0.5mL dose",
        ),
        "Vaccin à ARNm contre la COVID-19 (Moderna)",
    ),
)
