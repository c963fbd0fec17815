"""The conditions the generator knows, and the drugs that treat them.

Chronic conditions start at an age and stay; each is treated by one of its drugs, renewed
about yearly, and some are followed by a laboratory test. Acute problems are met in one
encounter class (a sinusitis in a consultation, a fracture at the emergency department, a
pneumonia in a stay) and resolve after a number of days.
"""

from __future__ import annotations

from datetime import date

from coffre.synth.catalog import (
    CHOLESTEROL,
    HBA1C,
    Acute,
    Chronic,
    Drug,
    Lab,
    atc,
    snomed,
)

PARACETAMOL = Drug(
    atc("N02BE01", "paracetamol"),
    "Paracétamol 500 mg, gélule",
    "1 à 2 gélules toutes les 6 heures si fièvre ou douleur, sans dépasser 6 gélules par jour.",
    as_needed=True,
)
PARACETAMOL_CHILD = Drug(
    atc("N02BE01", "paracetamol"),
    "Paracétamol 2,4 %, suspension buvable",
    "1 dose-kilo toutes les 6 heures en cas de fièvre, sans dépasser 4 prises par jour.",
    as_needed=True,
)
PARACETAMOL_1G = Drug(
    atc("N02BE01", "paracetamol"),
    "Paracétamol 1 g, comprimé",
    "1 comprimé jusqu'à 3 fois par jour en cas de douleur, à 6 heures d'intervalle au moins.",
    as_needed=True,
)
AMOXICILLIN = Drug(
    atc("J01CA04", "amoxicillin"),
    "Amoxicilline 1 g, comprimé dispersible",
    "1 comprimé 3 fois par jour pendant 7 jours.",
)
AMOXICILLIN_CHILD = Drug(
    atc("J01CA04", "amoxicillin"),
    "Amoxicilline 250 mg/5 ml, poudre pour suspension buvable",
    "80 mg/kg par jour en 2 prises, pendant 8 jours.",
)
IBUPROFEN = Drug(
    atc("M01AE01", "ibuprofen"),
    "Ibuprofène 400 mg, comprimé pelliculé",
    "1 comprimé 3 fois par jour pendant 5 jours, au cours des repas.",
)
FOSFOMYCIN = Drug(
    atc("J01XX01", "fosfomycin"),
    "Fosfomycine trométamol 3 g, granulés pour solution buvable en sachet",
    "1 sachet en prise unique, à distance des repas, de préférence le soir au coucher.",
)
ASPIRIN = Drug(
    atc("B01AC06", "acetylsalicylic acid"),
    "Acide acétylsalicylique 75 mg, poudre pour solution buvable en sachet",
    "1 sachet par jour, au cours d'un repas.",
)

HYPERTENSION = Chronic(
    snomed("38341003", "Hypertensive disorder, systemic arterial (disorder)"),
    "Hypertension artérielle",
    (30, 85),
    0.45,
    (
        Drug(atc("C08CA01", "amlodipine"), "Amlodipine 5 mg, gélule", "1 gélule le matin."),
        Drug(atc("C09AA05", "ramipril"), "Ramipril 5 mg, comprimé", "1 comprimé par jour."),
    ),
)
DIABETES = Chronic(
    snomed("44054006", "Diabetes mellitus type 2 (disorder)"),
    "Diabète de type 2",
    (35, 85),
    0.15,
    (
        Drug(
            atc("A10BA02", "metformin"),
            "Metformine 850 mg, comprimé pelliculé",
            "1 comprimé matin et soir, au cours des repas.",
        ),
    ),
    Lab(HBA1C, (7.2, 9.5), (6.2, 7.4)),
)

CHRONIC: tuple[Chronic, ...] = (
    HYPERTENSION,
    DIABETES,
    Chronic(
        snomed("55822004", "Hyperlipidemia (disorder)"),
        "Hypercholestérolémie",
        (35, 80),
        0.25,
        (
            Drug(
                atc("C10AA05", "atorvastatin"),
                "Atorvastatine 20 mg, comprimé pelliculé",
                "1 comprimé le soir.",
            ),
        ),
        Lab(CHOLESTEROL, (6.2, 7.8), (4.2, 5.4)),
    ),
    Chronic(
        snomed("195967001", "Asthma (disorder)"),
        "Asthme",
        (2, 30),
        0.10,
        (
            Drug(
                atc("R03AC02", "salbutamol"),
                "Salbutamol 100 µg/dose, suspension pour inhalation",
                "1 à 2 bouffées en cas de gêne respiratoire, sans dépasser 8 bouffées par jour.",
                as_needed=True,
            ),
        ),
    ),
    Chronic(
        snomed("13645005", "Chronic obstructive lung disease (disorder)"),
        "Bronchopneumopathie chronique obstructive",
        (45, 85),
        0.08,
        (
            Drug(
                atc("R03BB04", "tiotropium bromide"),
                "Tiotropium 18 µg, poudre pour inhalation en gélule",
                "Inhaler le contenu d'une gélule une fois par jour, à heure fixe.",
            ),
        ),
    ),
    Chronic(
        snomed("35489007", "Depressive disorder (disorder)"),
        "Épisode dépressif",
        (15, 80),
        0.12,
        (Drug(atc("N06AB06", "sertraline"), "Sertraline 50 mg, gélule", "1 gélule le matin."),),
    ),
    Chronic(
        snomed("40930008", "Hypothyroidism (disorder)"),
        "Hypothyroïdie",
        (20, 80),
        0.08,
        (
            Drug(
                atc("H03AA01", "levothyroxine sodium"),
                "Lévothyroxine sodique 75 µg, comprimé sécable",
                "1 comprimé le matin à jeun, 30 minutes avant le petit-déjeuner.",
            ),
        ),
    ),
    Chronic(
        snomed("49436004", "Atrial fibrillation (disorder)"),
        "Fibrillation atriale",
        (55, 95),
        0.10,
        (
            Drug(
                atc("B01AF02", "apixaban"),
                "Apixaban 5 mg, comprimé pelliculé",
                "1 comprimé matin et soir, à 12 heures d'intervalle.",
            ),
        ),
    ),
    Chronic(
        snomed("396275006", "Osteoarthritis (disorder)"),
        "Arthrose",
        (45, 95),
        0.30,
        (PARACETAMOL_1G,),
    ),
)

ACUTE: tuple[Acute, ...] = (
    Acute(
        snomed("444814009", "Viral sinusitis (disorder)"),
        "Sinusite virale",
        "AMB",
        (0, 95),
        (7, 14),
        PARACETAMOL,
        PARACETAMOL_CHILD,
    ),
    Acute(
        snomed("195662009", "Acute viral pharyngitis (disorder)"),
        "Pharyngite virale aiguë",
        "AMB",
        (2, 95),
        (5, 10),
        fever=True,
    ),
    Acute(
        snomed("10509002", "Acute bronchitis (disorder)"),
        "Bronchite aiguë",
        "AMB",
        (0, 95),
        (10, 21),
    ),
    Acute(
        snomed("65363002", "Otitis media (disorder)"),
        "Otite moyenne aiguë",
        "AMB",
        (0, 11),
        (7, 14),
        AMOXICILLIN_CHILD,
        fever=True,
    ),
    Acute(
        snomed("68566005", "Urinary tract infectious disease (disorder)"),
        "Infection urinaire",
        "AMB",
        (16, 95),
        (3, 7),
        FOSFOMYCIN,
    ),
    Acute(
        snomed("6142004", "Influenza (disorder)"),
        "Grippe",
        "AMB",
        (0, 95),
        (7, 14),
        PARACETAMOL,
        PARACETAMOL_CHILD,
        fever=True,
    ),
    Acute(
        snomed(
            "840539006",
            "Disease caused by severe acute respiratory syndrome coronavirus 2 (disorder)",
        ),
        "COVID-19",
        "AMB",
        (0, 95),
        (7, 21),
        PARACETAMOL,
        PARACETAMOL_CHILD,
        fever=True,
        since=date(2020, 3, 1),
    ),
    Acute(
        snomed("44465007", "Sprain of ankle (disorder)"),
        "Entorse de la cheville",
        "EMER",
        (5, 80),
        (14, 42),
        IBUPROFEN,
    ),
    Acute(
        snomed("65966004", "Fracture of forearm (disorder)"),
        "Fracture de l'avant-bras",
        "EMER",
        (3, 95),
        (42, 70),
        PARACETAMOL,
        PARACETAMOL_CHILD,
    ),
    Acute(
        snomed("25374005", "Gastroenteritis (disorder)"),
        "Gastro-entérite",
        "EMER",
        (0, 95),
        (3, 7),
        fever=True,
    ),
    Acute(
        snomed("233604007", "Pneumonia (disorder)"),
        "Pneumonie",
        "IMP",
        (0, 95),
        (14, 28),
        AMOXICILLIN,
        AMOXICILLIN_CHILD,
        fever=True,
    ),
    Acute(
        snomed("74400008", "Appendicitis (disorder)"),
        "Appendicite aiguë",
        "IMP",
        (5, 60),
        (14, 21),
        fever=True,
    ),
    Acute(
        snomed("5913000", "Fracture of neck of femur (disorder)"),
        "Fracture du col du fémur",
        "IMP",
        (65, 95),
        (60, 120),
        PARACETAMOL_1G,
    ),
    Acute(
        snomed("22298006", "Myocardial infarction (disorder)"),
        "Infarctus du myocarde",
        "IMP",
        (45, 95),
        (30, 60),
        ASPIRIN,
    ),
)
