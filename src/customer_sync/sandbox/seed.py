"""The customers of the sandbox's small business: a bakery that sells online and in its shop,
whose people sit in a CRM (HubSpot), a helpdesk (Zendesk), an email list (Mailchimp) and a
social inbox (Chatwoot), each app holding some of them, written its own way.

What the sync has to get right is all here, on purpose: the same person in two apps with an
email typed in another case; one person with a different phone in the CRM and the helpdesk (a
conflict the phone's priority rule decides); someone who unsubscribed from the list; Persian
and Arabic names, one phone typed in Persian digits; an email and a phone that are not valid
(the daemon refuses the value, records why, and syncs the rest of the person).

`PEOPLE` says who they are and where each is at the start; `seed()` puts them in the
simulators; `expected()` says what every app should hold once the daemon has synced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from customer_sync.sandbox.chatwoot import ChatwootSimulator
    from customer_sync.sandbox.hubspot import HubSpotSimulator
    from customer_sync.sandbox.mailchimp import MailchimpSimulator
    from customer_sync.sandbox.zendesk import ZendeskSimulator

__all__ = ["APPS", "PEOPLE", "Expected", "Person", "expected", "seed"]

#: The sandbox's apps, as named in its config.
APPS = ("crm", "desk", "list", "inbox")


@dataclass(frozen=True)
class Person:
    """One person of the business, as the apps that know them hold them at the start.

    Attributes:
        first_name, last_name: as every app writes them.
        email: the address, as written unless `email_in` says otherwise for an app.
        phone: E.164, as written unless `phone_in` says otherwise for an app.
        apps: the apps that hold the person at the start (the daemon creates the others).
        email_in: app -> the email as typed there (other case, or not an email at all).
        phone_in: app -> the phone as typed there (a different number, Persian digits, junk).
        unsubscribed: unsubscribed from the list (Mailchimp) before the sandbox starts.
    """

    first_name: str
    last_name: str
    email: str | None
    phone: str | None = None
    apps: tuple[str, ...] = ()
    email_in: dict[str, str] = field(default_factory=dict)
    phone_in: dict[str, str] = field(default_factory=dict)
    unsubscribed: bool = False

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


P = Person
PEOPLE: tuple[Person, ...] = (
    # -- in the CRM and the helpdesk, the email typed in another case in one of them ----------
    P("Ann", "Lee", "ann.lee@example.com", "+14155550101", ("crm", "desk"),
      email_in={"crm": "Ann.Lee@Example.com"}),
    P("Bob", "Stone", "bob.stone@example.com", "+14155550102", ("crm", "desk"),
      email_in={"desk": "BOB.STONE@EXAMPLE.COM"}),
    P("Carmen", "Ortiz", "carmen.ortiz@example.com", None, ("crm", "desk", "list"),
      email_in={"list": "Carmen.Ortiz@example.com"}),
    P("David", "Kim", "david.kim@example.com", "+14155550104", ("crm", "desk", "list", "inbox")),
    # -- the conflict: the CRM and the helpdesk hold different phones for Eve -----------------
    # [conflicts.fields.phone] priority puts the helpdesk first, so its number wins everywhere.
    P("Eve", "Park", "eve.park@example.com", "+14155550199", ("crm", "desk"),
      phone_in={"crm": "+14155550105"}),
    # -- unsubscribed from the list; the CRM hears it and keeps it ---------------------------
    P("Frank", "Moore", "frank.moore@example.com", None, ("crm", "list"), unsubscribed=True),
    # -- only in the CRM -----------------------------------------------------------------------
    P("Grace", "Hall", "grace.hall@example.com", "+14155550107", ("crm",)),
    P("Henry", "Adams", "henry.adams@example.com", None, ("crm",)),
    P("Isabel", "Cruz", "isabel.cruz@example.com", "+14155550109", ("crm",)),
    P("Jack", "Turner", "jack.turner@example.com", None, ("crm",)),
    P("Karen", "White", "karen.white@example.com", "+14155550111", ("crm",)),
    # the CRM's phone for Liam is not a phone number: refused, and the rest of Liam syncs
    P("Liam", "Scott", "liam.scott@example.com", None, ("crm",), phone_in={"crm": "12"}),
    # -- only in the helpdesk ------------------------------------------------------------------
    P("Mia", "Young", "mia.young@example.com", "+14155550113", ("desk",)),
    P("Noah", "Green", "noah.green@example.com", None, ("desk",)),
    P("Olivia", "Baker", "olivia.baker@example.com", "+14155550115", ("desk",)),
    P("Paul", "Nelson", "paul.nelson@example.com", None, ("desk",)),
    P("Quinn", "Carter", "quinn.carter@example.com", "+14155550117", ("desk",)),
    P("Rosa", "Diaz", "rosa.diaz@example.com", None, ("desk",)),
    # -- only on the email list ----------------------------------------------------------------
    P("Sam", "Rivera", "sam.rivera@example.com", None, ("list",)),
    P("Tina", "Brooks", "tina.brooks@example.com", None, ("list",)),
    P("Uma", "Patel", "uma.patel@example.com", None, ("list",)),
    P("Victor", "Hughes", "victor.hughes@example.com", None, ("list",)),
    P("Wendy", "Price", "wendy.price@example.com", None, ("list",)),
    # -- only in the social inbox: Persian and Arabic names --------------------------------------
    P("مریم", "رضایی", "maryam.rezaei@example.ir", "+989121110001", ("inbox",)),
    # typed in Persian digits by a channel; the daemon reads it as +989121110002
    P("علی", "محمدی", "ali.mohammadi@example.ir", "+989121110002", ("inbox",),
      phone_in={"inbox": "+۹۸ ۹۱۲ ۱۱۱ ۰۰۰۲"}),
    P("زهرا", "حسینی", "zahra.hosseini@example.ir", None, ("inbox",)),
    P("أحمد", "المنصوري", "ahmed.almansouri@example.ae", "+971501110004", ("inbox",)),
    P("فاطمة", "الزهراني", "fatima.alzahrani@example.sa", None, ("inbox",)),
    P("يوسف", "الحداد", "youssef.alhaddad@example.com", "+971501110006", ("inbox",)),
    # the inbox holds Hamid's email mistyped: refused; Hamid syncs by his phone, without one
    P("Hamid", "Rahimi", None, "+14155550130", ("inbox",),
      email_in={"inbox": "hamid.rahimi(at)example.com"}),
    # -- in two apps ---------------------------------------------------------------------------
    P("Xavier", "Reed", "xavier.reed@example.com", None, ("crm", "list")),
    P("Yara", "Haddad", "yara.haddad@example.com", "+14155550132", ("desk", "inbox")),
    P("Zoe", "Ward", "zoe.ward@example.com", None, ("list", "inbox")),
    P("رضا", "کریمی", "reza.karimi@example.ir", "+989121110033", ("crm", "inbox"),
      email_in={"crm": "Reza.Karimi@Example.IR"}),
    P("ليلى", "حداد", "layla.haddad@example.com", None, ("desk", "list")),
    P("Omar", "Farouk", "omar.farouk@example.com", "+14155550136", ("crm", "desk", "inbox"),
      email_in={"inbox": "OMAR.FAROUK@example.com"}),
    P("Nina", "Petrova", "nina.petrova@example.com", None, ("desk", "list", "inbox")),
    P("Leo", "Martin", "leo.martin@example.com", "+14155550138", ("crm", "list", "inbox")),
    P("Sofia", "Rossi", "sofia.rossi@example.com", None, ("crm", "desk", "list")),
)


@dataclass(frozen=True)
class Expected:
    """What one person should look like once synced."""

    name: str
    email: str | None
    phone: str | None
    apps: tuple[str, ...]  # every app that can hold them (the list needs an email)
    email_consent: str | None
    rejected: tuple[tuple[str, str], ...]  # (app, field) of each value the daemon refuses


def expected() -> list[Expected]:
    """Everyone, as the apps should hold them after the sync."""
    out = []
    for p in PEOPLE:
        rejected = []
        if p.email is None and p.email_in:
            rejected += [(app, "email") for app in p.email_in]
        if "crm" in p.phone_in and not p.phone_in["crm"].startswith("+"):
            rejected.append(("crm", "phone"))
        out.append(Expected(
            name=p.name, email=p.email, phone=p.phone,
            apps=APPS if p.email else tuple(a for a in APPS if a != "list"),
            email_consent="unsubscribed" if p.unsubscribed else None,
            rejected=tuple(rejected)))
    return out


def seed(*, hubspot: HubSpotSimulator, zendesk: ZendeskSimulator, mailchimp: MailchimpSimulator,
         chatwoot: ChatwootSimulator, at: datetime) -> None:
    """Put every person in the apps that hold them at the start, as last changed a while
    before `at` (each a minute apart), the way an import of the business's history would."""
    for i, p in enumerate(PEOPLE):
        changed = at - timedelta(days=7) + timedelta(minutes=i)
        email = {app: p.email_in.get(app, p.email) for app in APPS}
        phone = {app: p.phone_in.get(app, p.phone) for app in APPS}
        if "crm" in p.apps:
            props = {"firstname": p.first_name, "lastname": p.last_name}
            props |= {"email": email["crm"]} if email["crm"] else {}
            props |= {"phone": phone["crm"]} if phone["crm"] else {}
            hubspot.add_contact(props, updated_at=changed)
        if "desk" in p.apps:
            zendesk.add_user(name=p.name, updated_at=changed,
                             **({"email": email["desk"]} if email["desk"] else {}),
                             **({"phone": phone["desk"]} if phone["desk"] else {}))
        if "list" in p.apps and email["list"]:
            merges = {"FNAME": p.first_name, "LNAME": p.last_name}
            mailchimp.add_member(email["list"], merge_fields=merges, last_changed=changed,
                                 status="unsubscribed" if p.unsubscribed else "subscribed")
        if "inbox" in p.apps:
            chatwoot.add_contact(name=p.name, created_at=int(changed.timestamp()),
                                 **({"email": email["inbox"]} if email["inbox"] else {}),
                                 **({"phone_number": phone["inbox"]} if phone["inbox"] else {}))
