"""A patient's clinical history, from birth to last week.

Chronic conditions are drawn first, each with an onset date; visits are then spread over the
patient's life, and each visit records what a clinician would: vital signs, the acute problem
that brought the patient in, the chronic conditions that started since the last visit (with
their first treatment and test), the yearly renewal and follow-up test of known ones, a flu
shot in season. Childhood and COVID-19 vaccines follow their calendars. Every time is a local
time of the patient's region; the last visit ends before today.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from operator import itemgetter

from coffre.synth.builders import Code, Resource, Transaction, coding, concept, quantity, reference
from coffre.synth.catalog import (
    ACTIVE,
    ADMISSION,
    AMBULATORY,
    BLOOD_PRESSURE,
    BMI,
    CHECK_UP,
    CONFIRMED,
    DIAGNOSIS,
    DIASTOLIC,
    EMERGENCY,
    ER_VISIT,
    FOLLOW_UP,
    HEART_RATE,
    HEIGHT,
    INFLUENZA,
    INPATIENT,
    LABORATORY,
    PROBLEM_LIST,
    RESOLVED,
    SYMPTOM,
    SYSTOLIC,
    TEMPERATURE,
    VITAL_SIGNS,
    WEIGHT,
    Acute,
    Chronic,
    Drug,
    Lab,
    Measure,
    Vaccine,
)
from coffre.synth.clock import stamp
from coffre.synth.demographics import Person
from coffre.synth.problems import ACUTE, CHRONIC, DIABETES, HYPERTENSION
from coffre.synth.vaccination import childhood_doses, covid_doses

_CLASSES = (AMBULATORY, EMERGENCY, INPATIENT)
_CLASS_WEIGHTS = (0.82, 0.12, 0.06)
_LAST_VISIT = 8  # days before today: the longest stay still ends in the past
_RENEWAL = 300  # days after which a routine visit renews a chronic treatment


@dataclass(frozen=True, slots=True)
class _Visit:
    url: str
    start: datetime
    stamp: str
    age: float
    routine: bool
    physician: str


@dataclass(slots=True)
class _Treatment:
    """A diagnosed chronic condition and its current prescription."""

    chronic: Chronic
    condition: str
    drug: Drug
    request: Resource
    renewed: date


class History:
    """Writes one patient's history into their transaction."""

    def __init__(
        self,
        rng: random.Random,
        transaction: Transaction,
        person: Person,
        patient: str,
        today: date,
    ) -> None:
        self._rng = rng
        self._transaction = transaction
        self._person = person
        self._patient = patient
        self._today = today
        self._onsets = self._chronic_onsets()
        self._treatments: list[_Treatment] = []
        self._flu_season = 0
        chronic = {c for _, c in self._onsets}
        sex_height = 176.0 if person.sex == "male" else 163.0
        self._adult_height = rng.gauss(sex_height, 7.0)
        bmi = rng.gauss(24.5, 3.5) + 4.0 * (DIABETES in chronic) + 2.0 * (HYPERTENSION in chronic)
        self._adult_bmi = min(max(bmi, 17.0), 42.0)

    def write(self) -> None:
        for start in self._visit_starts():
            self._visit(start)
        birth = self._person.birth
        doses = childhood_doses(self._rng, birth, self._today)
        for vaccine, day in doses + covid_doses(self._rng, birth, self._today):
            self._immunize(vaccine, self._clinic_time(day), self._person.family_doctor)

    def _years(self, day: date) -> float:
        return (day - self._person.birth).days / 365.25

    def _chronic_onsets(self) -> list[tuple[date, Chronic]]:
        """The chronic conditions of the patient, by onset: more likely the older they are."""
        age = self._years(self._today)
        onsets = []
        for chronic in CHRONIC:
            first, last = chronic.onset
            if age <= first:
                continue
            if self._rng.random() < chronic.prevalence * min(1.0, (age - first) / (last - first)):
                onset_age = self._rng.uniform(first, min(age, last))
                onset = self._person.birth + timedelta(days=int(onset_age * 365.25))
                onsets.append((onset, chronic))
        onsets.sort(key=itemgetter(0))
        return onsets

    def _clinic_time(self, day: date) -> datetime:
        return datetime.combine(
            day, time(self._rng.randint(8, 18), self._rng.choice((0, 15, 30, 45)))
        )

    def _visit_starts(self) -> list[datetime]:
        first = self._person.birth.toordinal() + 1
        last = self._today.toordinal() - _LAST_VISIT
        most = max(2, min(30, 2 + int(self._years(self._today) * 1.5)))
        count = min(self._rng.randint(2, most), last - first + 1)
        days = sorted(self._rng.sample(range(first, last + 1), count))
        return [self._clinic_time(date.fromordinal(day)) for day in days]

    def _visit(self, start: datetime) -> None:
        rng = self._rng
        kind = rng.choices(_CLASSES, _CLASS_WEIGHTS)[0]
        age = self._years(start.date())
        problem: Acute | None = None
        if kind is AMBULATORY:
            site, physician = self._person.practice, self._person.family_doctor
            if rng.random() < 0.45:
                reason, problem = SYMPTOM, self._acute_problem("AMB", start.date(), age)
            else:
                reason = FOLLOW_UP if self._treatments and rng.random() < 0.5 else CHECK_UP
            end = start + timedelta(minutes=rng.choice((15, 20, 30)))
        else:
            site = self._person.hospital
            physician = rng.choice(site.physicians)
            reason = ER_VISIT if kind is EMERGENCY else ADMISSION
            problem = self._acute_problem(kind.code, start.date(), age)
            start = start.replace(hour=rng.randrange(24), minute=rng.randrange(60))
            end = start + timedelta(
                hours=rng.randint(2, 8) if kind is EMERGENCY else rng.randint(24, 156)
            )
        url = self._encounter(kind, reason, start, end, physician, site.organization)
        visit = _Visit(
            url, start, stamp(self._person.region, start), age, problem is None, physician
        )
        if visit.routine:
            self._follow_up(visit)
        diagnosed = self._diagnose_chronic(visit)
        if problem is not None:
            self._diagnose_acute(visit, problem)
        self._vital_signs(visit, problem is not None and problem.fever, diagnosed)
        if kind is AMBULATORY:
            self._flu_shot(visit)

    def _encounter(
        self,
        kind: Code,
        reason: tuple[Code, str],
        start: datetime,
        end: datetime,
        physician: str,
        organization: str,
    ) -> str:
        region = self._person.region
        return self._transaction.add(
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": coding(kind),
                "type": [concept(*reason)],
                "subject": reference(self._patient),
                "participant": [{"individual": reference(physician)}],
                "period": {"start": stamp(region, start), "end": stamp(region, end)},
                "serviceProvider": reference(organization),
            }
        )

    def _acute_problem(self, encounter_class: str, day: date, age: float) -> Acute:
        candidates = [
            acute
            for acute in ACUTE
            if acute.encounter_class == encounter_class
            and acute.ages[0] <= int(age) <= acute.ages[1]
            and acute.since <= day
        ]
        return self._rng.choice(candidates)

    def _condition(
        self, visit: _Visit, chronic: bool, code: Code, text: str, onset: date, end: date | None
    ) -> str:
        condition = {
            "resourceType": "Condition",
            "clinicalStatus": concept(RESOLVED if end is not None else ACTIVE),
            "verificationStatus": concept(CONFIRMED),
            "category": [concept(PROBLEM_LIST if chronic else DIAGNOSIS)],
            "code": concept(code, text),
            "subject": reference(self._patient),
            "encounter": reference(visit.url),
            "onsetDateTime": onset.isoformat(),
            "recordedDate": visit.stamp,
        }
        if end is not None:
            condition["abatementDateTime"] = end.isoformat()
        return self._transaction.add(condition)

    def _prescribe(self, visit: _Visit, drug: Drug, reason: str, status: str) -> Resource:
        request = {
            "resourceType": "MedicationRequest",
            "status": status,
            "intent": "order",
            "medicationCodeableConcept": concept(drug.code, drug.text),
            "subject": reference(self._patient),
            "encounter": reference(visit.url),
            "authoredOn": visit.stamp,
            "requester": reference(visit.physician),
            "reasonReference": [reference(reason)],
            "dosageInstruction": [{"text": drug.dosage, "asNeededBoolean": drug.as_needed}],
        }
        self._transaction.add(request)
        return request

    def _diagnose_chronic(self, visit: _Visit) -> set[Chronic]:
        """Record the conditions that began since the last visit, treat and test them."""
        diagnosed = set()
        day = visit.start.date()
        while self._onsets and self._onsets[0][0] <= day:
            onset, chronic = self._onsets.pop(0)
            condition = self._condition(visit, True, chronic.code, chronic.text, onset, None)
            if chronic.lab is not None:
                self._lab(visit, chronic.lab, treated=False)
            drug = self._rng.choice(chronic.drugs)
            request = self._prescribe(visit, drug, condition, "active")
            self._treatments.append(_Treatment(chronic, condition, drug, request, day))
            diagnosed.add(chronic)
        return diagnosed

    def _follow_up(self, visit: _Visit) -> None:
        """Test known chronic conditions, and renew treatments prescribed long enough ago."""
        day = visit.start.date()
        for treatment in self._treatments:
            if treatment.chronic.lab is not None:
                self._lab(visit, treatment.chronic.lab, treated=True)
            if (day - treatment.renewed).days >= _RENEWAL:
                treatment.request["status"] = "completed"
                treatment.request = self._prescribe(
                    visit, treatment.drug, treatment.condition, "active"
                )
                treatment.renewed = day

    def _diagnose_acute(self, visit: _Visit, problem: Acute) -> None:
        rng = self._rng
        day = visit.start.date()
        onset = max(day - timedelta(days=rng.randint(0, 4)), self._person.birth)
        end = onset + timedelta(days=rng.randint(*problem.days))
        resolved = end if end < self._today else None
        condition = self._condition(visit, False, problem.code, problem.text, onset, resolved)
        drug = problem.drug_for(int(visit.age))
        if drug is not None:
            status = "completed" if (self._today - day).days > 30 else "active"
            self._prescribe(visit, drug, condition, status)

    def _observation(self, visit: _Visit, category: Code, code: Code, text: str) -> Resource:
        return {
            "resourceType": "Observation",
            "status": "final",
            "category": [concept(category)],
            "code": concept(code, text),
            "subject": reference(self._patient),
            "encounter": reference(visit.url),
            "effectiveDateTime": visit.stamp,
        }

    def _measure(
        self, visit: _Visit, measure: Measure, value: float, category: Code = VITAL_SIGNS
    ) -> None:
        observation = self._observation(visit, category, measure.code, measure.text)
        observation["valueQuantity"] = quantity(value, measure.unit, measure.ucum)
        self._transaction.add(observation)

    def _lab(self, visit: _Visit, lab: Lab, *, treated: bool) -> None:
        low, high = lab.treated if treated else lab.untreated
        self._measure(visit, lab.measure, round(self._rng.uniform(low, high), 1), LABORATORY)

    def _blood_pressure(self, visit: _Visit, systolic: float, diastolic: float) -> None:
        observation = self._observation(visit, VITAL_SIGNS, *BLOOD_PRESSURE)
        observation["component"] = [
            {
                "code": concept(measure.code, measure.text),
                "valueQuantity": quantity(round(value), measure.unit, measure.ucum),
            }
            for measure, value in ((SYSTOLIC, systolic), (DIASTOLIC, diastolic))
        ]
        self._transaction.add(observation)

    def _height(self, age: float) -> float:
        """A simplified growth curve, up to the patient's adult height."""
        if age < 1:
            height = 50 + 25 * age
        elif age < 2:
            height = 75 + 12 * (age - 1)
        else:
            height = 87 + 6.2 * (age - 2)
        return min(height, self._adult_height)

    def _bmi(self, age: float) -> float:
        """Body mass index: the infant's rise and fall, then a slow adult gain."""
        if age < 1:
            return 13.5 + 4 * age
        if age < 6:
            return 17.5 - 0.3 * (age - 1)
        if age < 18:
            return 16 + (self._adult_bmi - 16) * (age - 6) / 12
        return self._adult_bmi + 0.04 * min(age - 18, 40)

    def _vital_signs(self, visit: _Visit, fever: bool, diagnosed: set[Chronic]) -> None:
        rng, age = self._rng, visit.age
        height = self._height(age) + rng.uniform(-0.5, 0.5)
        weight = self._bmi(age) * (height / 100) ** 2 * rng.uniform(0.98, 1.02)
        self._measure(visit, WEIGHT, round(weight, 1))
        if visit.routine or age < 18:
            self._measure(visit, HEIGHT, round(height, 1))
            if age >= 2:
                self._measure(visit, BMI, round(weight / (height / 100) ** 2, 1))
        resting = 130 if age < 1 else 95 if age < 12 else 72
        self._measure(visit, HEART_RATE, round(rng.gauss(resting, 8) + 15 * fever))
        if age >= 18 or (visit.routine and age >= 3):
            self._blood_pressure(visit, *self._pressure(age, diagnosed))
        if not visit.routine:
            temperature = rng.uniform(38.0, 39.6) if fever else rng.uniform(36.4, 37.3)
            self._measure(visit, TEMPERATURE, round(temperature, 1))

    def _pressure(self, age: float, diagnosed: set[Chronic]) -> tuple[float, float]:
        """Systolic and diastolic pressure: high when hypertension is found, then controlled."""
        rng = self._rng
        if HYPERTENSION in diagnosed:
            return rng.uniform(145, 175), rng.uniform(90, 105)
        if any(treatment.chronic is HYPERTENSION for treatment in self._treatments):
            return rng.uniform(122, 142), rng.uniform(74, 88)
        adult_years = max(age - 18, 0)
        systolic = 92 + 1.2 * min(age, 18) + 0.3 * adult_years
        diastolic = 55 + 0.9 * min(age, 18) + 0.1 * adult_years
        return rng.gauss(systolic, 7), rng.gauss(diastolic, 5)

    def _immunize(
        self, vaccine: Vaccine, moment: datetime, performer: str, encounter: str | None = None
    ) -> None:
        immunization = {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": concept(vaccine.code, vaccine.text),
            "patient": reference(self._patient),
            "occurrenceDateTime": stamp(self._person.region, moment),
            "primarySource": True,
            "performer": [{"actor": reference(performer)}],
        }
        if encounter is not None:
            immunization["encounter"] = reference(encounter)
        self._transaction.add(immunization)

    def _flu_shot(self, visit: _Visit) -> None:
        """Once a season, from October, for the old and the chronically ill."""
        start = visit.start
        at_risk = visit.age >= 65 or bool(self._treatments)
        in_season = start.month >= 10 and start.year > self._flu_season
        if in_season and at_risk and self._rng.random() < 0.6:
            self._flu_season = start.year
            self._immunize(self._rng.choice(INFLUENZA), start, visit.physician, visit.url)
