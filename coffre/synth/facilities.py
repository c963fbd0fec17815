"""The care organizations and physicians that every synthetic patient shares.

An organization is (identifier value, name, city, postal code, kind), kind being
``hospital`` (emergencies and stays) or ``primary`` (the family doctor's practice). A
physician is (identifier value, given name, family name, gender, organization identifier
value, specialty). The hospitals are real institutions; the practices and the physicians
are invented.
"""

from __future__ import annotations

Organization = tuple[str, str, str, str, str]
Physician = tuple[str, str, str, str, str, str]

FR_ORGANIZATIONS: tuple[Organization, ...] = (
    ("fr-hcl", "Hospices Civils de Lyon", "Lyon", "69002", "hospital"),
    ("fr-aphp", "Assistance Publique-Hôpitaux de Paris", "Paris", "75004", "hospital"),
    ("fr-chu-bordeaux", "CHU de Bordeaux", "Bordeaux", "33000", "hospital"),
    ("fr-chu-nantes", "CHU de Nantes", "Nantes", "44000", "hospital"),
    (
        "fr-msp-pentes",
        "Maison de santé pluriprofessionnelle des Pentes",
        "Lyon",
        "69001",
        "primary",
    ),
    ("fr-cds-belleville", "Centre de santé de Belleville", "Paris", "75020", "primary"),
    ("fr-cab-chartrons", "Cabinet médical des Chartrons", "Bordeaux", "33300", "primary"),
)

QC_ORGANIZATIONS: tuple[Organization, ...] = (
    (
        "qc-chum",
        "Centre hospitalier de l'Université de Montréal",
        "Montréal",
        "H2X 0C1",
        "hospital",
    ),
    ("qc-chu-quebec", "CHU de Québec-Université Laval", "Québec", "G1V 4G2", "hospital"),
    ("qc-hmr", "Hôpital Maisonneuve-Rosemont", "Montréal", "H1T 2M4", "hospital"),
    ("qc-clsc-plateau", "CLSC du Plateau-Mont-Royal", "Montréal", "H2H 2B4", "primary"),
    ("qc-clsc-haute-ville", "CLSC de la Haute-Ville", "Québec", "G1R 1S9", "primary"),
    ("qc-gmf-saint-denis", "GMF Clinique médicale Saint-Denis", "Montréal", "H2X 3K8", "primary"),
)

FR_PHYSICIANS: tuple[Physician, ...] = (
    ("FR-MED-0001", "Sophie", "Lemaître", "female", "fr-msp-pentes", "general"),
    ("FR-MED-0002", "Hervé", "Brémond", "male", "fr-msp-pentes", "general"),
    ("FR-MED-0003", "Anaïs", "Guérin", "female", "fr-cds-belleville", "general"),
    ("FR-MED-0004", "Karim", "Haddad", "male", "fr-cds-belleville", "general"),
    ("FR-MED-0005", "Clémence", "Thévenin", "female", "fr-cab-chartrons", "general"),
    ("FR-MED-0006", "François", "Pélissier", "male", "fr-hcl", "emergency"),
    ("FR-MED-0007", "Hélène", "Sénéchal", "female", "fr-hcl", "internal"),
    ("FR-MED-0008", "Jérôme", "Lévêque", "male", "fr-aphp", "emergency"),
    ("FR-MED-0009", "Cécile", "Chrétien", "female", "fr-aphp", "internal"),
    ("FR-MED-0010", "Benoît", "Rivière", "male", "fr-chu-bordeaux", "emergency"),
    ("FR-MED-0011", "Agnès", "Le Bihan", "female", "fr-chu-nantes", "internal"),
)

QC_PHYSICIANS: tuple[Physician, ...] = (
    ("QC-MED-0001", "Geneviève", "Bélanger", "female", "qc-clsc-plateau", "general"),
    ("QC-MED-0002", "Réjean", "Thériault", "male", "qc-clsc-plateau", "general"),
    ("QC-MED-0003", "Marie-Ève", "Lécuyer", "female", "qc-clsc-haute-ville", "general"),
    ("QC-MED-0004", "Gaétan", "Vézina", "male", "qc-clsc-haute-ville", "general"),
    ("QC-MED-0005", "Kathleen", "O'Brien", "female", "qc-gmf-saint-denis", "general"),
    ("QC-MED-0006", "Étienne", "Létourneau", "male", "qc-chum", "emergency"),
    ("QC-MED-0007", "Andréanne", "Gélinas", "female", "qc-chum", "internal"),
    ("QC-MED-0008", "Ghislain", "Pépin", "male", "qc-chu-quebec", "emergency"),
    ("QC-MED-0009", "Frédérique", "Bédard", "female", "qc-chu-quebec", "internal"),
    ("QC-MED-0010", "Sylvain", "Séguin", "male", "qc-hmr", "emergency"),
)
