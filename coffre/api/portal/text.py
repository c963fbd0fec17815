"""Every word the portal shows, in French and English."""

from __future__ import annotations

from coffre.api.access import UNAUTHENTICATED
from coffre.api.notices import NOTIFIER
from coffre.service.audit import OPERATOR

LANGUAGES = ("fr", "en")

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "portal": "My Coffre health record",
        "skip": "Skip to the content",
        "nav": "Portal sections",
        "record": "My record",
        "access": "Who accessed my record",
        "notices": "Notices",
        "research": "Research use",
        "sign_out": "Sign out",
        "other_language": "Français",
        "sign_in": "Sign in",
        "sign_in_title": "Sign in to your health record",
        "username": "User name",
        "password": "Password",
        "failed": "The user name or the password is wrong.",
        "wait": "Too many failed sign-ins: please try again in {minutes} min.",
        "not_patient": "This portal is for patients. Professionals use their own software.",
        "expired": "The form has expired: please try again.",
        "signed_out": "You are signed out.",
        "session_over": "Your session has ended: please sign in again.",
        "session_ended": "Your session has ended: please sign in again. A form you had just"
        " sent was not recorded.",
        "via": "through the application {app}",
        "page_of": "Accesses {first} to {last} of {total}.",
        "newer": "Newer accesses",
        "older": "Older accesses",
        "pages": "Pages of accesses",
        "error_title": "This page cannot be shown",
        "error_400": "The request could not be understood. Go back and try again.",
        "error_403": "This form has expired or did not come from the portal, so nothing was"
        " recorded. Go back to the page and send it again.",
        "error_404": "There is no such page in the portal.",
        "error_405": "This page cannot be used that way. Go back and try again.",
        "error_413": "The form sent is too large.",
        "error_500": "The portal could not show this page. Please try again later.",
        "booking": "Book a vaccination",
        "to_come": "My appointments to come",
        "none_to_come": "No appointment to come.",
        "cancel": "Cancel",
        "cancel_at": "Cancel the appointment of {when}",
        "find_time": "Find a time",
        "near": "Town, postal code or name of the centre",
        "find_centre": "Find the centres",
        "no_centre": "No vaccination centre matches that: try a town or a postal code.",
        "more_centres": "Only the first {most} centres are listed: give a town, a postal code or"
        " the centre's name.",
        "centre": "Vaccination centre",
        "day": "Day",
        "show_times": "Show the free times",
        "free_times": "Free times on {day} at {centre} ({zone} time)",
        "no_free_time": "No free time left that day: try another day or another centre.",
        "booked_done": "Your appointment is booked.",
        "cancelled_done": "Your appointment is cancelled: its time is free for someone else.",
        "seat_taken": "Someone booked that time just before you: please choose another.",
        "time_past": "That time has passed: please choose one to come.",
        "no_such_time": "That time is not one the centre offers: please choose one below.",
        "centre_closed": "That centre no longer takes bookings: please choose another.",
        "one_to_come": "You already have a vaccination appointment to come: to change it,"
        " cancel it, then book another time.",
        "appointment_begun": "This appointment has begun or is past: it can no longer be"
        " cancelled here.",
        "appointment_changed": "This appointment changed meanwhile (in another window?), so"
        " nothing was cancelled: here it is as it stands.",
        "error_503": "Many people are booking right now: please try again in a minute.",
        "back": "Back to my record",
        "conditions": "Conditions",
        "medications": "Medications",
        "allergies": "Allergies",
        "immunizations": "Immunisations",
        "observations": "Recent results",
        "appointments": "Appointments",
        "name": "Name",
        "date": "Date",
        "status": "Status",
        "value": "Value",
        "none": "Nothing recorded.",
        "recent_note": "The {count} most recent results.",
        "access_intro": "Each time someone opened or changed your record, Coffre wrote it in a"
        " log that nobody can alter. Emergency (break-glass) accesses come first.",
        "who": "Who",
        "role": "Role",
        "when": "When (UTC)",
        "action": "What",
        "why": "Why",
        "break_glass": "Emergency access (break-glass)",
        "own_views": "Your own views of your record, not listed: {count}.",
        "no_access": "Nobody else has opened your record.",
        "erased": "Your record was erased by Coffre on {date}: what it held about you, and the"
        " list of who opened it, can no longer be read by anyone, Coffre included.",
        "notices_intro": "Coffre tells you the first time a health professional opens your record.",
        "no_notices": "No notices.",
        "from": "From",
        "message": "Message",
        "research_intro": "Your data may be used, pseudonymised, for health research that an"
        " authority approved. You can refuse: from then on, your data are left out of every"
        " research extract and statistic. You can change your mind at any time.",
        "refusing": "You refuse the use of your data for research.",
        "not_refusing": "You do not refuse the use of your data for research.",
        "since": "Since {date}.",
        "refuse": "I refuse research use of my data",
        "accept": "I withdraw my refusal",
        "saved": "Your choice is recorded.",
        "stale": "Your choice changed meanwhile (in another window?), so this form was not"
        " recorded. Please review your choice below and send it again if you still wish.",
        "choice": "Your choice",
    },
    "fr": {
        "portal": "Mon dossier de santé Coffre",
        "skip": "Aller au contenu",
        "nav": "Sections du portail",
        "record": "Mon dossier",
        "access": "Qui a consulté mon dossier",
        "notices": "Avis",
        "research": "Usage pour la recherche",
        "sign_out": "Se déconnecter",
        "other_language": "English",
        "sign_in": "Se connecter",
        "sign_in_title": "Connexion à votre dossier de santé",
        "username": "Nom d'utilisateur",
        "password": "Mot de passe",
        "failed": "Le nom d'utilisateur ou le mot de passe est erroné.",
        "wait": "Trop de tentatives de connexion échouées : réessayez dans {minutes} min.",
        "not_patient": "Ce portail est réservé aux patients. Les professionnels utilisent leur"
        " propre logiciel.",
        "expired": "Le formulaire a expiré : veuillez réessayer.",
        "signed_out": "Vous êtes déconnecté.",
        "session_over": "Votre session a pris fin : veuillez vous reconnecter.",
        "session_ended": "Votre session a pris fin : veuillez vous reconnecter. Un formulaire"
        " que vous veniez d'envoyer n'a pas été enregistré.",
        "via": "par l'application {app}",
        "page_of": "Accès {first} à {last} sur {total}.",
        "newer": "Accès plus récents",
        "older": "Accès plus anciens",
        "pages": "Pages d'accès",
        "error_title": "Cette page ne peut pas être affichée",
        "error_400": "La demande n'a pas pu être comprise. Revenez en arrière et réessayez.",
        "error_403": "Ce formulaire a expiré ou ne vient pas du portail : rien n'a été"
        " enregistré. Revenez à la page et renvoyez-le.",
        "error_404": "Cette page n'existe pas dans le portail.",
        "error_405": "Cette page ne s'utilise pas ainsi. Revenez en arrière et réessayez.",
        "error_413": "Le formulaire envoyé est trop volumineux.",
        "error_500": "Le portail n'a pas pu afficher cette page. Veuillez réessayer plus tard.",
        "booking": "Prendre rendez-vous pour un vaccin",
        "to_come": "Mes rendez-vous à venir",
        "none_to_come": "Aucun rendez-vous à venir.",
        "cancel": "Annuler",
        "cancel_at": "Annuler le rendez-vous du {when}",
        "find_time": "Trouver une heure",
        "near": "Ville, code postal ou nom du centre",
        "find_centre": "Trouver les centres",
        "no_centre": "Aucun centre de vaccination ne correspond : essayez une ville ou un code"
        " postal.",
        "more_centres": "Seuls les {most} premiers centres sont listés : précisez une ville, un"
        " code postal ou le nom du centre.",
        "centre": "Centre de vaccination",
        "day": "Jour",
        "show_times": "Voir les heures libres",
        "free_times": "Heures libres le {day} à {centre} (heure {zone})",
        "no_free_time": "Plus aucune heure libre ce jour-là : essayez un autre jour ou un autre"
        " centre.",
        "booked_done": "Votre rendez-vous est réservé.",
        "cancelled_done": "Votre rendez-vous est annulé : son heure est libre pour quelqu'un"
        " d'autre.",
        "seat_taken": "Quelqu'un a réservé cette heure juste avant vous : choisissez-en une autre.",
        "time_past": "Cette heure est passée : choisissez-en une à venir.",
        "no_such_time": "Le centre n'offre pas cette heure : choisissez-en une ci-dessous.",
        "centre_closed": "Ce centre ne prend plus de rendez-vous : choisissez-en un autre.",
        "one_to_come": "Vous avez déjà un rendez-vous de vaccination à venir : pour le changer,"
        " annulez-le, puis réservez une autre heure.",
        "appointment_begun": "Ce rendez-vous a commencé ou est passé : il ne peut plus être"
        " annulé ici.",
        "appointment_changed": "Ce rendez-vous a changé entre-temps (dans une autre fenêtre ?) :"
        " rien n'a été annulé. Le voici tel qu'il est.",
        "error_503": "Beaucoup de personnes réservent en ce moment : réessayez dans une minute.",
        "back": "Retour à mon dossier",
        "conditions": "Problèmes de santé",
        "medications": "Médicaments",
        "allergies": "Allergies",
        "immunizations": "Vaccinations",
        "observations": "Résultats récents",
        "appointments": "Rendez-vous",
        "name": "Nom",
        "date": "Date",
        "status": "Statut",
        "value": "Valeur",
        "none": "Rien d'enregistré.",
        "recent_note": "Les {count} résultats les plus récents.",
        "access_intro": "Chaque fois que quelqu'un a ouvert ou modifié votre dossier, Coffre l'a"
        " inscrit dans un journal que personne ne peut altérer. Les accès d'urgence (bris de"
        " glace) viennent en premier.",
        "who": "Qui",
        "role": "Rôle",
        "when": "Quand (UTC)",
        "action": "Quoi",
        "why": "Pourquoi",
        "break_glass": "Accès d'urgence (bris de glace)",
        "own_views": "Vos propres consultations de votre dossier, non listées : {count}.",
        "no_access": "Personne d'autre n'a ouvert votre dossier.",
        "erased": "Votre dossier a été effacé par Coffre le {date} : ce qu'il contenait sur"
        " vous, et la liste des personnes qui l'ont ouvert, ne peuvent plus être lus par"
        " personne, Coffre compris.",
        "notices_intro": "Coffre vous avise la première fois qu'un professionnel de santé ouvre"
        " votre dossier.",
        "no_notices": "Aucun avis.",
        "from": "De",
        "message": "Message",
        "research_intro": "Vos données peuvent servir, pseudonymisées, à des recherches en santé"
        " autorisées par une autorité. Vous pouvez refuser : vos données sont alors écartées de"
        " toute extraction et de toute statistique de recherche. Vous pouvez changer d'avis à"
        " tout moment.",
        "refusing": "Vous refusez l'usage de vos données pour la recherche.",
        "not_refusing": "Vous ne refusez pas l'usage de vos données pour la recherche.",
        "since": "Depuis le {date}.",
        "refuse": "Je refuse l'usage de mes données pour la recherche",
        "accept": "Je retire mon refus",
        "saved": "Votre choix est enregistré.",
        "stale": "Votre choix a changé entre-temps (dans une autre fenêtre ?) : ce formulaire"
        " n'a pas été enregistré. Vérifiez votre choix ci-dessous et renvoyez-le si vous le"
        " souhaitez toujours.",
        "choice": "Votre choix",
    },
}


CODES: dict[str, dict[str, str]] = {
    "en": {
        "read": "read",
        "search": "search",
        "create": "create",
        "update": "update",
        "delete": "delete",
        "history": "history",
        "operation": "operation",
        "active": "active",
        "inactive": "inactive",
        "resolved": "resolved",
        "completed": "completed",
        "stopped": "stopped",
        "clinician": "clinician",
        "researcher": "researcher",
        "admin": "administrator",
        "system": "system",
        "proposed": "proposed",
        "pending": "pending",
        "booked": "booked",
        "arrived": "arrived",
        "checked-in": "checked in",
        "fulfilled": "fulfilled",
        "cancelled": "cancelled",
        "noshow": "not attended",
        "waitlist": "waiting list",
        "entered-in-error": "entered in error",
        "recurrence": "recurrence",
        "relapse": "relapse",
        "remission": "remission",
        "on-hold": "on hold",
        "draft": "draft",
        "not-done": "not done",
        "intended": "intended",
        "not-taken": "not taken",
        "unknown": "unknown",
    },
    "fr": {
        "read": "lecture",
        "search": "recherche",
        "create": "création",
        "update": "modification",
        "delete": "suppression",
        "history": "historique",
        "operation": "opération",
        "active": "actif",
        "inactive": "inactif",
        "resolved": "résolu",
        "completed": "terminé",
        "stopped": "arrêté",
        "clinician": "clinicien",
        "researcher": "chercheur",
        "admin": "administrateur",
        "system": "système",
        # Those Coffre writes down as the actor of an access that names no one's record.
        OPERATOR.who: "l'opérateur du coffre, du côté souverain (ligne de commande coffre)",
        NOTIFIER.who: "la passerelle Coffre, qui vous avise du premier accès d'un professionnel",
        UNAUTHENTICATED: "un client non authentifié",
        "proposed": "proposé",
        "pending": "en attente",
        "booked": "réservé",
        "arrived": "arrivé",
        "checked-in": "enregistré",
        "fulfilled": "honoré",
        "cancelled": "annulé",
        "noshow": "absent",
        "waitlist": "liste d'attente",
        "entered-in-error": "saisi par erreur",
        "recurrence": "récidive",
        "relapse": "rechute",
        "remission": "rémission",
        "on-hold": "suspendu",
        "draft": "brouillon",
        "not-done": "non fait",
        "intended": "prévu",
        "not-taken": "non pris",
        "unknown": "inconnu",
    },
}
"""The codes records and the log hold (statuses, interactions, roles, Coffre's own
actors), in words: apart from the page's words, so that a record's text (an
Observation's value "failed") is never shown as one of the portal's messages."""


def word(lang: str, key: str) -> str:
    """The page's word ``key`` in ``lang``."""
    return TEXT[lang].get(key, key)


def code_word(lang: str, code: str) -> str:
    """A code in ``lang`` (a status, an interaction, a role); one with no translation is
    shown as it is."""
    return CODES[lang].get(code, code)
