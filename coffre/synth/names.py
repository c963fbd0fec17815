"""First and family names of people in France and in Quebec, accents included.

The lists mix the names common across several generations, so that a patient of 90 and one
of 9 both get plausible ones. Quebec anglophones (the en-CA speakers) get their own lists.
"""

from __future__ import annotations

FR_MALE = (
    "Jean", "Pierre", "Michel", "André", "Philippe", "Alain", "Bernard", "Jacques", "Daniel",
    "Gérard", "René", "Marcel", "Christian", "Hervé", "Jérôme", "Sébastien", "Frédéric",
    "Stéphane", "Benoît", "François", "Grégoire", "Nicolas", "Julien", "Thomas", "Clément",
    "Aurélien", "Rémi", "Jérémie", "Loïc", "Joël", "Noël", "Lucas", "Hugo", "Louis", "Gabriel",
    "Raphaël", "Léo", "Jules", "Arthur", "Noé", "Théo", "Mathéo", "Maël", "Gaël", "Timothée",
    "Valentin", "Mathis", "Karim", "Mehdi", "Yanis", "Moussa",
)  # fmt: skip

FR_FEMALE = (
    "Marie", "Jeanne", "Françoise", "Monique", "Jacqueline", "Geneviève", "Thérèse", "Nathalie",
    "Isabelle", "Sylvie", "Catherine", "Véronique", "Hélène", "Cécile", "Agnès", "Élodie",
    "Émilie", "Mélanie", "Céline", "Aurélie", "Stéphanie", "Gaëlle", "Bérénice", "Noémie",
    "Clémence", "Camille", "Léa", "Chloé", "Manon", "Inès", "Emma", "Jade", "Louise", "Zoé",
    "Léna", "Anaïs", "Maëlle", "Océane", "Héloïse", "Adèle", "Éloïse", "Rose", "Ambre",
    "Yasmine", "Fatoumata", "Sarah",
)  # fmt: skip

FR_FAMILY = (
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux",
    "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert", "Bonnet",
    "François", "Martinez", "Légaré", "Gérard", "Chevalier", "Hébert", "Ménard", "Rivière",
    "Lemaître", "Thévenin", "Guérin", "Péron", "Le Goff", "Le Gall", "Le Bihan", "Brémond",
    "Prévost", "Gaillard", "Rémy", "Sénéchal", "Lévêque", "Léger", "Chrétien", "Bérard",
    "Pélissier", "Émery", "Noël", "Benoît", "Benhamou", "Haddad", "Nguyen", "Diallo", "Traoré",
    "Da Silva", "Ferreira", "Müller", "Kieffer", "Étienne", "Clément", "Poirier", "Mallet",
)  # fmt: skip

QC_MALE = (
    "Jean-François", "Marc-André", "Jean-Guy", "Guy", "Gilles", "Réjean", "Gaétan", "Normand",
    "Sylvain", "Éric", "Mathieu", "Félix", "William", "Samuel", "Olivier", "Alexis", "Émile",
    "Xavier", "Antoine", "Jérémy", "Benoît", "Ghislain", "Rosaire", "Gaston", "Léandre",
    "Zacharie", "Édouard", "Loïc", "Thomas", "Liam", "Noah", "Nathan", "Raymond", "Yvon",
    "Maxime", "Étienne", "Simon", "Hugo", "Léo", "Jacob",
)  # fmt: skip

QC_FEMALE = (
    "Marie-Ève", "Marie-Claude", "Marie-Pier", "Geneviève", "Mélanie", "Isabelle", "Julie",
    "Chantal", "Josée", "Lucie", "Francine", "Ginette", "Nicole", "Rachel", "Thérèse", "Annie",
    "Karine", "Stéphanie", "Émilie", "Léa", "Florence", "Rosalie", "Béatrice", "Maëlle",
    "Charlotte", "Alice", "Juliette", "Laurence", "Océane", "Noémie", "Mégane", "Andréanne",
    "Frédérique", "Ariane", "Éloïse", "Jocelyne", "Huguette", "Solange", "Raymonde", "Olivia",
)  # fmt: skip

QC_FAMILY = (
    "Tremblay", "Gagnon", "Roy", "Côté", "Bouchard", "Gauthier", "Morin", "Lavoie", "Fortin",
    "Gagné", "Ouellet", "Pelletier", "Bélanger", "Lévesque", "Bergeron", "Leblanc", "Paquette",
    "Girard", "Simard", "Boucher", "Caron", "Beaulieu", "Cloutier", "Dubé", "Poirier",
    "Fournier", "Lapointe", "Leclerc", "Lefebvre", "Poulin", "Thibault", "St-Pierre", "Nadeau",
    "Landry", "Martel", "Bédard", "Grenier", "Lessard", "Bernier", "Michaud", "Hébert",
    "Desjardins", "Couture", "Turcotte", "Lachance", "Gosselin", "Savard", "Proulx", "Demers",
    "Perreault", "Lemieux", "Cyr", "Dufour", "Bérubé", "Boivin", "Ménard", "Thériault",
    "Lécuyer", "Vézina", "Létourneau", "Pépin", "Séguin", "Gélinas", "Bélisle", "Trudel",
    "D'Amours", "Gagnon-Tremblay", "Roy-Bélanger", "Côté-Lévesque",
)  # fmt: skip

QC_EN_MALE = (
    "Michael", "David", "James", "Robert", "Daniel", "Matthew", "Ryan", "Kevin", "Patrick",
    "Liam", "Ethan", "Owen",
)  # fmt: skip

QC_EN_FEMALE = (
    "Jennifer", "Sarah", "Jessica", "Emily", "Susan", "Margaret", "Kathleen", "Heather",
    "Chloe", "Hannah", "Olivia", "Abigail",
)  # fmt: skip

QC_EN_FAMILY = (
    "Smith", "Campbell", "O'Brien", "Murphy", "MacDonald", "Stewart", "Johnson", "Brown",
    "Wilson", "Fraser", "Cohen", "Greenberg", "Kowalski", "Rossi", "Ryan", "Kelly",
)  # fmt: skip
