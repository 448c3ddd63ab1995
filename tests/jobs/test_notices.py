"""Incident notices (annexe 2, 5.1) through a real SMTP relay on loopback, with STARTTLS and AUTH.

A demo night with 035's partner down: its GRO file is due in 2 working days, so the night opens
an incident and mails its contacts and the CNAF's operators; the next failing night sends
nothing new; the night its DSG file is at risk too sends one update; the night the partner is
back delivers and sends the closing notice. No personal value of the day reaches any message.
"""

from __future__ import annotations

import re
import shutil
from datetime import date, datetime
from pathlib import Path

import pytest
from support import make_demo
from support.smtp import PASSWORD, USER, SmtpRelay

from flux_pmi.config.settings import load
from flux_pmi.core.clock import PARIS, FixedClock
from flux_pmi.core.errors import ConfigError, ExitCode, FluxError
from flux_pmi.jobs import notices
from flux_pmi.jobs.holds import hold, resume
from flux_pmi.jobs.night import Night
from flux_pmi.jobs.preflight import mail_findings
from flux_pmi.trace.incidents import (
    Cause,
    Expected,
    Facts,
    IncidentLog,
    IncidentState,
    NoticeKind,
    NoticeState,
)
from flux_pmi.trace.store import TraceStore
from flux_pmi.transport.registry import transport_for

D23, D24, D25, D26 = (date(2026, 11, d) for d in (23, 24, 25, 26))
CONTACT, OPERATOR = "pmi-dsi@cd035.example.fr", "exploitation@cnaf.example.fr"
PASSWORD_ENV = "FLUX_PMI_TEST_SMTP_PASSWORD"


def _notify(port: int, **extra: str) -> str:
    lines = ["[notify]", 'host = "127.0.0.1"', f"port = {port}", f'username = "{USER}"',
             f'password_env = "{PASSWORD_ENV}"', 'from_address = "flux-pmi@cnaf.example.fr"',
             f'operators = ["{OPERATOR}"]', 'cafile = "smtp/smtp.crt"', "timeout = 10",
             *(f"{k} = {v}" for k, v in extra.items())]
    return "\n" + "\n".join(lines) + "\n"


def _configure(root: Path, port: int) -> None:
    cfg = root / "flux-pmi.toml"
    text = cfg.read_text().replace('[departments."035"]\n', f'[departments."035"]\ncontacts = ["{CONTACT}"]\n')
    cfg.write_text(text + _notify(port))


@pytest.fixture
def demo(tmp_path, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    relay = SmtpRelay(root / "smtp")
    _configure(root, relay.port)
    yield root, relay
    relay.stop()


def _down(*codes: str):
    def factory(settings, dept):
        if dept.code in codes:
            raise FluxError("partner down for the test")
        return transport_for(settings, dept)
    return factory


def _night(root: Path, day: date, *, down: tuple[str, ...] = (), hour: int = 4):
    clock = FixedClock(datetime(day.year, day.month, day.day, hour, 30, tzinfo=PARIS))
    return Night(load(root / "flux-pmi.toml"), clock=clock, sleep=lambda _s: None,
                 transport_factory=_down(*down)).run(day)


def _log(root: Path):
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    try:
        log = IncidentLog(trace)
        return log.incidents(), log.notices()
    finally:
        trace.close()


def _body(arrived) -> str:
    return arrived.message.get_content().replace("\r\n", "\n")


def _personal_values(root: Path) -> set[str]:
    from flux_pmi.demo.generate import generate_inbox

    again = generate_inbox(root / "regen-inbox", business_date=D23, departments=["035", "02A"], seed=7, bad=True)
    shutil.rmtree(root / "regen-inbox")
    return again.personal_values


def test_one_notice_opens_one_update_a_worse_day_one_closes_and_none_leaks(demo):
    root, relay = demo
    relay.start()
    report = _night(root, D23, down=("035",))
    assert report.exit_code == ExitCode.UNDELIVERED  # the notice changes nothing of the run's outcome
    assert not [p for p in report.problems if p.startswith("notices:")]
    [opening] = relay.arrived
    assert opening.tls and opening.login == USER.encode()  # STARTTLS, then AUTH, before any data
    assert opening.message["Content-Transfer-Encoding"] == "quoted-printable"
    assert opening.rcpt_tos == [CONTACT, OPERATOR]
    body = _body(opening)
    assert "INC-035-20261123-1" in opening.message["Subject"] and "ouverture" in opening.message["Subject"]
    # The law's 8 days bind (core/workdays.py): DSG and GRO are due on the 23rd (receipts of the 15th),
    # SGR (receipts of the 16th) on the 24th, not yet within the at-risk window.
    assert "Flux concernés : DSG, GRO\n" in body and "Enregistrements : 33\n" in body
    assert "GRO_035_20261123_000001.xml.p7m" in body and "SGR_035" not in body
    assert "Échéance (la plus proche, délai applicable) : 2026-11-23 (à risque)" in body
    assert ("Délai qui la fixe : la loi (art. L.2122-4 du code de la santé publique), 8 jours calendaires "
            "après la réception\n") in body
    assert "Livraison prévue : à la prochaine exécution nocturne" in body

    assert _night(root, D24, down=("035",)).exit_code == ExitCode.UNDELIVERED
    [update] = relay.arrived[1:]  # SGR is at risk now: worse, one update
    body = _body(update)
    assert "INC-035-20261123-1 mise à jour" in update.message["Subject"]
    assert "Flux concernés : DSG, SGR, GRO\n" in body and "Enregistrements : 41\n" in body
    assert "2026-11-23 (dépassée)" in body

    assert _night(root, D25, down=("035",)).exit_code == ExitCode.UNDELIVERED
    assert len(relay.arrived) == 2  # nothing worse: an open incident is not notified again each night

    assert _night(root, D26).exit_code == ExitCode.OK  # the partner is back: everything delivered
    [closing] = relay.arrived[2:]
    assert "INC-035-20261123-1 clôture" in closing.message["Subject"]
    assert "Les fichiers en retard ont été livrés." in _body(closing)
    assert _night(root, date(2026, 11, 27)).exit_code == ExitCode.OK
    assert len(relay.arrived) == 3

    [incident], notices = _log(root)
    assert incident.number == "INC-035-20261123-1" and incident.state == IncidentState.CLOSED
    assert [n.kind for n in notices] == [NoticeKind.OPEN, NoticeKind.UPDATE, NoticeKind.CLOSE]
    assert all(n.state == NoticeState.SENT and n.recipients == 2 and n.attempts == 1 for n in notices)
    assert [n.subject for n in notices] == [a.message["Subject"] for a in relay.arrived]

    values = _personal_values(root)
    assert len(values) > 50
    for arrived in relay.arrived:
        raw = arrived.message.as_string() + arrived.message.get_content()
        assert not [v for v in values if v in raw]


def test_a_worse_incident_sends_one_update_a_day_at_most(demo):
    root, relay = demo
    relay.start()
    _night(root, D23, down=("035",))
    assert len(relay.arrived) == 1
    with TraceStore(root / "trace" / "flux-pmi.sqlite") as t:  # as if the opening had counted 1 record
        t.db.execute("UPDATE incidents SET records = 1")
    _night(root, D23, down=("035",), hour=10)  # worse, but the incident was notified today
    assert len(relay.arrived) == 1
    _night(root, D24, down=("035",))
    [update] = relay.arrived[1:]
    assert "mise à jour" in update.message["Subject"] and "Enregistrements : 41\n" in _body(update)


def test_a_relay_down_delays_the_notice_and_never_the_delivery(demo):
    root, relay = demo  # not started: nothing listens on its port
    report = _night(root, D23, down=("035",))
    assert report.exit_code == ExitCode.UNDELIVERED
    assert sorted(p.name for p in (root / "drop" / "02A").glob("*.p7m"))  # 02A got its files all the same
    [problem] = [p for p in report.problems if p.startswith("notices:")]
    assert "1 incident notice(s) not sent" in problem and "the next run retries" in problem
    [incident], [notice] = _log(root)
    assert notice.state == NoticeState.PENDING and notice.attempts == 1 and notice.last_error

    relay.start()
    report = _night(root, D24, down=("035",))
    assert not [p for p in report.problems if p.startswith("notices:")]
    opening, update = relay.arrived  # the pending opening first, then the day's update (SGR at risk)
    assert incident.number in opening.message["Subject"] and "ouverture" in opening.message["Subject"]
    assert "mise à jour" in update.message["Subject"]
    [_], [notice, _] = _log(root)
    assert notice.state == NoticeState.SENT and notice.attempts == 2


def test_a_held_departement_is_told_after_resume_and_closed_once_delivered(demo):
    root, relay = demo
    relay.start()
    now = datetime(2026, 11, 23, 4, 0, tzinfo=PARIS)
    hold(root / "flux-pmi.toml", "035", by="ops", reason="partner migration", now=now)
    assert _night(root, D23).exit_code == ExitCode.OK  # held files are not "undelivered"
    [opening] = relay.arrived
    assert "Livraison prévue : après la reprise des livraisons (flux-pmi resume)" in _body(opening)
    resume(root / "flux-pmi.toml", "035", by="ops", now=now)
    assert _night(root, D24).exit_code == ExitCode.OK
    [closing] = relay.arrived[1:]
    assert "clôture" in closing.message["Subject"]


def test_without_a_notify_table_nothing_is_traced_nor_sent(demo):
    root, relay = demo
    relay.start()
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().split("\n[notify]")[0])
    assert load(cfg).notify is None
    assert _night(root, D23, down=("035",)).exit_code == ExitCode.UNDELIVERED
    assert relay.arrived == [] and _log(root) == ([], [])


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "key"), [
    ('colour = "blue"', "notify.colour"),
    ('starttls = false', "notify.starttls"),
    ('operators = ["not an address"]', "notify.operators"),
    ('operators = []', "notify.operators"),
    ('from_address = "cnaf"', "notify.from_address"),
    ('port = 0', "notify.port"),
])
def test_the_notify_table_names_the_key_it_refuses(demo, change, key):
    root, _ = demo
    cfg = root / "flux-pmi.toml"
    name = change.split(" =")[0]
    kept = [line for line in cfg.read_text().splitlines() if not line.startswith(f"{name} =")]
    cfg.write_text("\n".join(kept) + "\n" + change + "\n")
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert err.value.key == key


def test_a_password_comes_from_an_owner_only_file_or_the_environment(demo, monkeypatch):
    root, _ = demo
    cfg = root / "flux-pmi.toml"
    secret = root / "smtp" / "password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o640)
    cfg.write_text(cfg.read_text().replace(f'password_env = "{PASSWORD_ENV}"', 'password_file = "smtp/password"'))
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert err.value.key == "notify.password_file" and "owner only" in err.value.expected
    secret.chmod(0o600)
    notify = load(cfg).notify
    assert notify is not None and notify.password == PASSWORD.encode() and PASSWORD not in repr(notify)
    cfg.write_text(cfg.read_text().replace('password_file = "smtp/password"', ""))
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert err.value.key == "notify.password_env"
    monkeypatch.delenv(PASSWORD_ENV)


def test_contacts_come_from_the_registry_or_the_operators_file(demo, tmp_path):
    root, _ = demo
    cfg = root / "flux-pmi.toml"
    assert load(cfg).departments["035"].contacts == (CONTACT,)
    registry = tmp_path / "registry.toml"
    text = (Path(load(cfg).file).parent / "flux-pmi.toml").read_text()
    from flux_pmi.config.settings import REGISTRY_FILE

    registry.write_text(REGISTRY_FILE.read_text().replace(
        '[departments."02A"]\n', '[departments."02A"]\ncontacts = ["pmi@cd2a.example.fr"]\n'))
    cfg.write_text(text + f'\n[registry]\nfile = "{registry}"\n')
    settings = load(cfg)
    assert settings.departments["02A"].contacts == ("pmi@cd2a.example.fr",)
    assert settings.departments["001"].contacts == ()  # the shipped registry names nobody
    registry.write_text(registry.read_text().replace('"pmi@cd2a.example.fr"', '"nobody"'))
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert err.value.key == "departments.02A.contacts"


def test_a_version_4_trace_gets_the_incident_tables(tmp_path):
    path = tmp_path / "trace" / "t.sqlite"
    with TraceStore(path) as t:
        t.db.execute("DROP TABLE notices")
        t.db.execute("DROP TABLE incidents")
        t.db.execute("PRAGMA user_version = 4")
    with TraceStore(path) as t:
        assert t.db.execute("PRAGMA user_version").fetchone()[0] >= 7
        assert IncidentLog(t).incidents() == [] and IncidentLog(t).notices() == []


@pytest.mark.parametrize("page", ["README.md", "docs/operations.md"])
def test_the_documented_notify_example_loads(demo, monkeypatch, page):
    root, _ = demo
    monkeypatch.setenv("FLUX_PMI_SMTP_PASSWORD", "from the environment")
    text = (Path(__file__).resolve().parents[2] / page).read_text(encoding="utf-8")
    [block] = [b.split("```")[0] for b in text.split("```toml\n")[1:] if "[notify]" in b.split("```")[0]]
    cfg = root / "flux-pmi.toml"
    mine = cfg.read_text().split("\n[notify]")[0]
    # The page's block has its own [departments."035"] table: this one goes, whatever the demo wrote in it.
    mine = re.sub(r'\[departments\."035"\]\n(?:[^\[\n][^\n]*\n)*', "", mine)
    cfg.write_text(mine + "\n" + block)
    settings = load(cfg)
    assert settings.notify is not None and settings.notify.password == b"from the environment"
    assert settings.notify.starttls and settings.departments["035"].contacts == ("pmi-dsi@example.fr",)


def test_check_logs_in_to_the_relay_and_sends_nothing(demo):
    root, relay = demo
    relay.start()
    settings = load(root / "flux-pmi.toml")
    [found] = mail_findings(settings)
    assert found.ok and found.scope == "notify"
    assert found.detail == "connected, STARTTLS, certificate verified, logged in"
    assert relay.arrived == []
    relay.stop()
    [down] = mail_findings(settings)
    assert not down.ok and down.what == "SMTP relay unusable: incident notices would wait"
    assert down.detail.startswith(f"SMTP relay 127.0.0.1:{relay.port}: ")


def test_check_says_which_step_the_relay_refused(demo, monkeypatch):
    root, relay = demo
    relay.start()
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    [refused] = mail_findings(load(root / "flux-pmi.toml"))
    assert not refused.ok and "SMTPAuthenticationError (SMTP 535)" in refused.detail
    assert "not-the-password" not in refused.detail
    # Without the internal CA, the relay's certificate is not trusted: found before any password is sent.
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace('cafile = "smtp/smtp.crt"\n', ""))
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    [untrusted] = mail_findings(load(cfg))
    assert not untrusted.ok and "TLS: CERTIFICATE_VERIFY_FAILED" in untrusted.detail
    assert relay.arrived == []


def test_check_without_a_notify_table_says_nothing_of_mail(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    assert mail_findings(load(root / "flux-pmi.toml")) == []


@pytest.mark.parametrize("basis, says", [
    ("contract", "Délai qui la fixe : la convention, 8 jours ouvrés après la réception\n"),
    ("request", "Délai qui la fixe : la demande de réémission du département\n"),
    (None, None),  # a file traced before the clocks were told apart: nothing claimed
])
def test_the_notice_names_the_clock_that_sets_its_deadline(tmp_path, basis, says):
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    facts = Facts(cause=Cause.PARTNER, expected=Expected.NEXT_RUN, flows=("DSG",),
                  files=("DSG_035_20261123_000001.xml.p7m",), records=3, deadline="2026-11-25", basis=basis)
    body = notices.draft(load(root / "flux-pmi.toml"), NoticeKind.OPEN, "INC-035-20261123-1", "035", facts,
                         datetime(2026, 11, 23, 4, 30, tzinfo=PARIS)).body
    assert "Échéance (la plus proche, délai applicable) : 2026-11-25 (à risque)\n" in body
    if says is None:
        assert "Délai qui la fixe" not in body
    else:
        assert says in body
