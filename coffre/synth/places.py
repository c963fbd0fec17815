"""Towns and streets of France and Quebec.

A French town is (name, postal codes, INSEE commune code, telephone zone digit): the INSEE
code is the birthplace written into a NIR, and the zone the first digit after +33 of a
landline. A Quebec town is (name, forward sortation areas, area codes): the first three
characters of its postal codes and the area codes of its telephone numbers.
"""

from __future__ import annotations

FrenchTown = tuple[str, tuple[str, ...], str, int]
QuebecTown = tuple[str, tuple[str, ...], tuple[str, ...]]

FR_TOWNS: tuple[FrenchTown, ...] = (
    ("Paris", tuple(f"750{n:02d}" for n in range(1, 21)), "75056", 1),
    ("Lyon", tuple(f"6900{n}" for n in range(1, 10)), "69123", 4),
    ("Marseille", tuple(f"130{n:02d}" for n in range(1, 17)), "13055", 4),
    ("Toulouse", ("31000", "31100", "31200", "31300", "31400", "31500"), "31555", 5),
    ("Nice", ("06000", "06100", "06200", "06300"), "06088", 4),
    ("Nantes", ("44000", "44100", "44200", "44300"), "44109", 2),
    ("Strasbourg", ("67000", "67100", "67200"), "67482", 3),
    ("Montpellier", ("34000", "34070", "34080", "34090"), "34172", 4),
    ("Bordeaux", ("33000", "33100", "33200", "33300", "33800"), "33063", 5),
    ("Lille", ("59000", "59160", "59260", "59777", "59800"), "59350", 3),
    ("Rennes", ("35000", "35200", "35700"), "35238", 2),
    ("Reims", ("51100",), "51454", 3),
    ("Saint-Étienne", ("42000", "42100"), "42218", 4),
    ("Le Havre", ("76600", "76610", "76620"), "76351", 2),
    ("Grenoble", ("38000", "38100"), "38185", 4),
    ("Dijon", ("21000",), "21231", 3),
    ("Angers", ("49000", "49100"), "49007", 2),
    ("Nîmes", ("30000", "30900"), "30189", 4),
    ("Villeurbanne", ("69100",), "69266", 4),
    ("Clermont-Ferrand", ("63000", "63100"), "63113", 4),
    ("Aix-en-Provence", ("13080", "13090", "13100", "13290", "13540"), "13001", 4),
    ("Brest", ("29200",), "29019", 2),
    ("Tours", ("37000", "37100", "37200"), "37261", 2),
    ("Limoges", ("87000", "87100", "87280"), "87085", 5),
    ("Amiens", ("80000", "80080", "80090"), "80021", 3),
    ("Besançon", ("25000",), "25056", 3),
    ("Orléans", ("45000", "45100"), "45234", 2),
    ("Caen", ("14000",), "14118", 2),
    ("Nancy", ("54000", "54100"), "54395", 3),
    ("Béziers", ("34500",), "34032", 4),
    ("Chambéry", ("73000",), "73065", 4),
    ("Quimper", ("29000",), "29232", 2),
    ("Pau", ("64000",), "64445", 5),
    ("La Rochelle", ("17000",), "17300", 5),
    ("Ajaccio", ("20000", "20090"), "2A004", 4),
    ("Bastia", ("20200", "20600"), "2B033", 4),
)

QC_TOWNS: tuple[QuebecTown, ...] = (
    (
        "Montréal",
        ("H1V", "H1W", "H2G", "H2H", "H2J", "H2L", "H2T", "H2V", "H2X", "H3A", "H3H", "H4A"),
        ("514", "438"),
    ),
    ("Québec", ("G1K", "G1L", "G1R", "G1S", "G1V", "G2B"), ("418", "581")),
    ("Laval", ("H7E", "H7G", "H7L", "H7N", "H7T"), ("450", "579")),
    ("Gatineau", ("J8P", "J8T", "J8Y", "J9A", "J9H"), ("819", "873")),
    ("Longueuil", ("J4H", "J4J", "J4K", "J4L", "J4M"), ("450", "579")),
    ("Sherbrooke", ("J1E", "J1G", "J1H", "J1J", "J1L"), ("819", "873")),
    ("Saguenay", ("G7G", "G7H", "G7J", "G7S"), ("418", "581")),
    ("Lévis", ("G6J", "G6V", "G6W", "G6Z"), ("418", "581")),
    ("Trois-Rivières", ("G8T", "G8Y", "G8Z", "G9A", "G9B"), ("819", "873")),
    ("Terrebonne", ("J6W", "J6X", "J6Y"), ("450", "579")),
    ("Saint-Jean-sur-Richelieu", ("J2W", "J2X", "J3A", "J3B"), ("450", "579")),
    ("Repentigny", ("J5Y", "J5Z", "J6A"), ("450", "579")),
    ("Drummondville", ("J2A", "J2B", "J2C", "J2E"), ("819", "873")),
    ("Saint-Jérôme", ("J5L", "J7Y", "J7Z"), ("450", "579")),
    ("Granby", ("J2G", "J2H", "J2J"), ("450", "579")),
    ("Saint-Hyacinthe", ("J2R", "J2S", "J2T"), ("450", "579")),
    ("Rimouski", ("G5L", "G5M", "G5N"), ("418", "581")),
    ("Shawinigan", ("G9N", "G9P", "G9T"), ("819", "873")),
    ("Victoriaville", ("G6P", "G6S", "G6T"), ("819", "873")),
    ("Joliette", ("J6E",), ("450", "579")),
    ("Rouyn-Noranda", ("J9X", "J9Y"), ("819", "873")),
    ("Val-d'Or", ("J9P",), ("819", "873")),
    ("Sept-Îles", ("G4R", "G4S"), ("418", "581")),
    ("Baie-Comeau", ("G4Z", "G5C"), ("418", "581")),
    ("Gaspé", ("G4X",), ("418", "581")),
    ("Alma", ("G8B", "G8E"), ("418", "581")),
    ("Magog", ("J1X",), ("819", "873")),
)

# Countries of birth of French residents born abroad: INSEE country codes after the "99".
FR_BIRTH_COUNTRIES = ("350", "351", "352", "127", "134", "139", "131", "109", "401")

FR_STREETS = (
    "rue de la République", "avenue Jean-Jaurès", "boulevard Gambetta", "rue Victor-Hugo",
    "rue Pasteur", "place de l'Église", "rue du Général-de-Gaulle", "avenue Foch",
    "rue Édouard-Herriot", "chemin des Écoliers", "impasse des Lilas", "allée des Châtaigniers",
    "quai Saint-Antoine", "rue des Tanneurs", "rue de la Gare", "avenue de la Libération",
    "rue Émile-Zola", "boulevard de la Croix-Rousse", "rue Mercière", "cours Lafayette",
    "rue des Frères-Lumière", "rue du Château", "rue de l'Hôtel-de-Ville", "route de Crémieu",
    "rue Sainte-Thérèse", "place du Marché", "rue des Écoles", "allée des Peupliers",
    "avenue des Acacias", "rue Jean-Moulin", "rue Léon-Blum", "rue du Faubourg-Saint-Honoré",
)  # fmt: skip

QC_STREETS = (
    "rue Saint-Denis", "boulevard René-Lévesque Ouest", "rue Sainte-Catherine Est",
    "avenue du Mont-Royal Est", "chemin de la Côte-des-Neiges", "rue Saint-Jean",
    "Grande Allée Est", "boulevard Laurier", "rue de l'Église", "avenue Papineau",
    "rue Notre-Dame Ouest", "chemin Sainte-Foy", "boulevard Charest Est", "rue King Ouest",
    "rue Principale", "boulevard des Forges", "rue Racine Est", "avenue Cartier",
    "rue Masson", "boulevard Saint-Joseph", "rue Bélanger", "rue Fleury Ouest",
    "chemin du Lac", "rue des Érables", "rue du Pont", "avenue Royale", "rang Saint-Édouard",
    "montée Gagnon", "boulevard Taschereau", "rue Wellington Nord",
)  # fmt: skip
