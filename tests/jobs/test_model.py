"""A model-based proof: random operator days against a real installation, checked after every step.

Hypothesis drives sequences of what operators and the world do to flux-pmi over many simulated
days (an injected clock: FLUX_PMI_NOW), against a real installation with a local-drop partner and
a real OpenSSH partner on loopback:
- operator actions: drop a day's input, run, hold, resume, reemit, purge, receive, a held
  or unreachable PMI's certificate renewed (what it gets from then on must open with the new key),
  and a département disabled in the config (`enabled = false`) and enabled again;
- faults: a run SIGKILLed at a named fault point, the SFTP partner down (and back).

After every step the invariants are checked against a deliberately simple model:
- every valid record is delivered at most once in an original file, and at the end (every hold
  resumed, the partner back, one last run) exactly once; re-emissions are marked `_Rnn`;
- per flow and département, the original sequence numbers seen by the partner are 1..n: strictly
  increasing, never repeated, with no gap (held, disabled or failed files wait, in order);
- nothing personal outside sealed files (the input material still in inbox/ and work/ aside);
- nothing the operator did not ask for is sent: a held or disabled partner gets nothing new, a reemit sends
  only the requested département's `_Rnn` files, and hold, resume, purge and receive send nothing.

`make test` runs a bounded number of examples; FLUX_PMI_MODEL_EXAMPLES=N (and
FLUX_PMI_MODEL_STEPS=M) run more by hand. docs/reliability.md reports the figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from support import dump_sqlite, make_demo, record_fingerprints, run_cli
from support.sshd import FLOW_DIRS, PartnerPool, generate_key, require_tools

from flux_pmi.core.clock import PARIS
from flux_pmi.demo import pki as demo_pki
from flux_pmi.demo.generate import generate_inbox, working_days_before
from flux_pmi.seal import certs, cms

LOCAL, REMOTE = "035", "02A"
DEPTS = (LOCAL, REMOTE)
FLOWS = ("DSG", "GRO", "SGR")
START = date(2026, 11, 23)  # a Monday
SEED = 11
EXAMPLES = int(os.environ.get("FLUX_PMI_MODEL_EXAMPLES", "8"))
STEPS = int(os.environ.get("FLUX_PMI_MODEL_STEPS", "20"))
# Fault points reached on every run that has input (test_crash.py proves each one on its own).
KILL_POINTS = ("claim-move:1", "parse:1", "sealed:1", "archived:1", "deliver:1", "delivered-traced:1",
               "sftp-before-rename:1")
NAME_RE = re.compile(r"^(DSG|SGR|GRO)_(\w{3})_(\d{8})_(\d{6})(?:_P\d+of\d+)?(_R\d{2})?\.(?:xml|zip)\.p7m$")
ACTIONS: Counter = Counter()  # CLI commands the examples ran: the test proves it exercised them
HOLDERS = {"inbox", "work", "pki", "received", "partners", "regen"}  # legitimate holders of plaintext


def _now(day: date) -> str:
    return datetime.combine(day, time(4, 0), tzinfo=PARIS).isoformat()


class OperatorDays(RuleBasedStateMachine):
    """One installation per example; the model is what the partners must have received."""

    base: Path  # set by the test before the machine runs
    client_key: tuple[Path, str]

    def __init__(self) -> None:
        super().__init__()
        self.root = self.base / f"ex{len(list(self.base.iterdir()))}"
        self.root.mkdir()
        make_demo(self.root / "demo", departments=",".join(DEPTS), seed=SEED)
        self.install = self.root / "demo"
        shutil.rmtree(self.install / "inbox")
        for flow in FLOWS:
            (self.install / "inbox" / flow).mkdir(parents=True)
        self.pool = PartnerPool(self.root / "partners")
        self.partner = self.pool.start([REMOTE], [self.client_key[1]])[REMOTE]
        self._configure_sftp()
        self.today = START
        self.dropped: set[date] = set()
        self.flow_days: set[date] = set()
        self.expected: Counter = Counter()  # (dept, flow) -> valid records dropped
        self.personal: set[str] = set()
        self.held: set[str] = set()
        self.disabled: set[str] = set()
        self.seen: dict[tuple[str, str], str] = {}  # (dept, file) -> sha256 of every file a partner ever had
        self.fingerprints: Counter = Counter()  # record fingerprints seen in original files
        self.counts: Counter = Counter()  # (dept, flow) -> records seen in original files
        self.renewals = 0
        self.snapshot = self._partner_files()

    # -- the installation --------------------------------------------------------------------

    def _configure_sftp(self) -> None:
        kh = self.partner.write_known_hosts(self.install / "known_hosts")
        params = self.partner.transport_params(self.client_key[0], kh, connect_timeout=3, timeout=5)
        inline = "{ " + ", ".join(
            f"{k} = {json.dumps(v) if not isinstance(v, dict) else '{ ' + ', '.join(f'{a} = {json.dumps(b)}' for a, b in v.items()) + ' }'}"
            for k, v in params.items()
        ) + " }"  # fmt: skip
        cfg = self.install / "flux-pmi.toml"
        header = f'[departments."{REMOTE}"]\n'
        text = cfg.read_text()
        assert header in text
        text = text.replace(header, f"{header}transport = {inline}\n")
        # Fail fast while the partner is down: the model checks what is sent, not how long it waits.
        text = text.replace("attempts = 3", "attempts = 1").replace("backoff_seconds = 0.5", "backoff_seconds = 0.01")
        cfg.write_text(text)

    def cli(self, *args: str, env: dict[str, str] | None = None):
        ACTIONS[args[0]] += 1
        return run_cli(*args, "--config", str(self.install / "flux-pmi.toml"),
                       env_extra={"FLUX_PMI_NOW": _now(self.today), **(env or {})})

    def _partner_files(self, pattern: str = "[!.]*.p7m") -> dict[tuple[str, str], Path]:
        """What a partner can take: final names only (a writer's temporary name starts with a dot)."""
        files = {(LOCAL, p.name): p for p in (self.install / "drop" / LOCAL).glob(pattern)}
        for flow_dir in FLOW_DIRS.values():
            files |= {(REMOTE, p.name): p for p in (self.partner.root / flow_dir).glob(pattern)}
        return files

    def _open(self, dept: str, path: Path) -> bytes:
        pki = self.install / "pki"
        return cms.open_sealed(path.read_bytes(), recipient_cert=certs.load_certificate(pki / f"{dept}.crt"),
                               recipient_key=certs.load_private_key(pki / f"{dept}.key", None),
                               trusted_signers=[certs.load_certificate(pki / "cnaf.crt")])

    def _new_files(self) -> dict[tuple[str, str], Path]:
        """What the partners received since the last step, after checking nothing was replaced."""
        now = self._partner_files()
        for key, path in now.items():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert self.seen.get(key, digest) == digest, f"{key} was overwritten with other content"
        new = {k: p for k, p in now.items() if k not in self.seen}
        for key, path in new.items():
            self.seen[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            m = NAME_RE.match(key[1])
            assert m and m.group(2) == key[0], f"unexpected name or wrong partner: {key}"
            if m.group(5):
                continue  # a re-emission: same content and sequence, marked as such
            fps = record_fingerprints({f"{key[0]}/{key[1]}": self._open(key[0], path)})
            self.fingerprints.update(fps)
            self.counts[(key[0], m.group(1))] += sum(fps.values())
        return new

    # -- operator actions --------------------------------------------------------------------

    @rule(days=st.integers(min_value=1, max_value=3))
    def next_day_with_input(self, days: int) -> None:
        """Time passes and upstream drops the day's input (valid records only: the model counts them)."""
        self.today += timedelta(days=days)
        # Upstream writes one set of files per working day: two business days on one D-1 would collide.
        while working_days_before(self.today, 1) in self.flow_days:
            self.today += timedelta(days=1)
        self.flow_days.add(working_days_before(self.today, 1))
        summary = generate_inbox(self.install / "inbox", business_date=self.today, departments=list(DEPTS),
                                 seed=SEED, bad=False)
        self.dropped.add(self.today)
        for dept, flows in summary.valid_per_department.items():
            for flow, n in flows.items():
                self.expected[(dept, flow)] += n
        self.personal |= summary.personal_values
        ACTIONS["drop"] += 1
        self._expect_nothing_sent()

    # The demo certificates last two years: a model that long would only find them expired.
    @precondition(lambda self: self.today < START + timedelta(days=500))
    @rule(days=st.sampled_from([10, 40, 100]))
    def long_pause(self, days: int) -> None:
        """Weeks with no input at all: purges run, sequences must not restart."""
        self.today += timedelta(days=days)
        self._expect_nothing_sent()

    @rule()
    def run(self) -> None:
        done = self.cli("run", "--date", self.today.isoformat())
        assert done.returncode in (0, 3), done.stdout + done.stderr[-3000:]
        self._expect_only_unheld()

    @rule(point=st.sampled_from(KILL_POINTS))
    def run_killed(self, point: str) -> None:
        ACTIONS["kill"] += 1
        done = self.cli("run", "--date", self.today.isoformat(), env={"FLUX_PMI_CRASH_AT": point})
        assert done.returncode in (-signal.SIGKILL, 0, 3), done.stdout + done.stderr[-3000:]
        self._expect_only_unheld()

    @precondition(lambda self: self.partner.running)
    @rule()
    def partner_down(self) -> None:
        ACTIONS["partner-down"] += 1
        self.partner.stop()
        self._expect_nothing_sent()

    @precondition(lambda self: not self.partner.running)
    @rule()
    def partner_up(self) -> None:
        self.partner.start()
        self._expect_nothing_sent()

    @rule(dept=st.sampled_from(DEPTS))
    def hold(self, dept: str) -> None:
        done = self.cli("hold", dept, "--reason", "maintenance", "--by", "model")
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        self.held.add(dept)
        self._expect_nothing_sent()

    @rule(dept=st.sampled_from(DEPTS))
    def resume(self, dept: str) -> None:
        done = self.cli("resume", dept, "--by", "model")
        assert done.returncode in (0, 6), done.stdout + done.stderr[-3000:]
        self.held.discard(dept)
        self._expect_nothing_sent()

    def _set_enabled(self, dept: str, enabled: bool) -> None:
        cfg = self.install / "flux-pmi.toml"
        header = f'[departments."{dept}"]\n'
        text = cfg.read_text().replace(header + "enabled = false\n", header)
        cfg.write_text(text if enabled else text.replace(header, header + "enabled = false\n"))

    @precondition(lambda self: len(self.disabled) < len(DEPTS))
    @rule(data=st.data())
    def disable(self, data) -> None:
        """The département's table says `enabled = false` (its convention suspended, say): it is sent
        nothing, its records are kept and its built files wait; enabled again, it gets each once, in order."""
        dept = data.draw(st.sampled_from(sorted(set(DEPTS) - self.disabled)))
        ACTIONS["disable"] += 1
        self._set_enabled(dept, False)
        self.disabled.add(dept)
        self._expect_nothing_sent()

    @precondition(lambda self: bool(self.disabled))
    @rule(data=st.data())
    def enable(self, data) -> None:
        dept = data.draw(st.sampled_from(sorted(self.disabled)))
        ACTIONS["enable"] += 1
        self._set_enabled(dept, True)
        self.disabled.discard(dept)
        self._expect_nothing_sent()

    @precondition(lambda self: bool(self.held) or not self.partner.running)
    @rule(data=st.data())
    def renew_certificate(self, data) -> None:
        """A PMI held or unreachable sends a new certificate (a new key), as during a migration: whatever
        it gets from now on must open with it, the files that waited for it included."""
        dept = data.draw(st.sampled_from(sorted(self.held | (set() if self.partner.running else {REMOTE}))))
        ACTIONS["renew"] += 1
        pki = self.install / "pki"
        ca = demo_pki.Credential(certs.load_certificate(pki / "ca.crt"), certs.load_private_key(pki / "ca.key"))
        self.renewals += 1
        now = datetime.combine(self.today, time(4, 0), tzinfo=PARIS)
        demo_pki.write_credential(demo_pki.issue_cert(ca, f"PMI {dept} (renewal {self.renewals})", now=now), pki, dept)
        self._expect_nothing_sent()

    # What the partners have depends on timing (a run killed while two départements deliver in
    # parallel): drawn as a number, so that the same choices replay the same way whatever was sent.
    @rule(pick=st.integers(min_value=0, max_value=999))
    def reemit(self, pick: int) -> None:
        originals = sorted(k for k in self.seen if not NAME_RE.match(k[1]).group(5))
        if not originals:
            return
        dept, name = originals[pick % len(originals)]
        m = NAME_RE.match(name)
        day = datetime.strptime(m.group(3), "%Y%m%d").date()
        done = self.cli("reemit", "--flow", m.group(1), "--department", dept, "--date", day.isoformat(),
                        "--reason", "model", "--by", "model")
        # 6: refused (past retention); 3: the partner is down or held, the copy waits for the night.
        assert done.returncode in (0, 3, 6), done.stdout + done.stderr[-3000:]
        new = self._new_files()
        assert all(k[0] == dept and NAME_RE.match(k[1]).group(5) for k in new), f"reemit sent {sorted(new)}"
        assert all(NAME_RE.match(k[1]).group(1) == m.group(1) for k in new), f"reemit sent {sorted(new)}"
        assert (dept not in self.held and dept not in self.disabled) or not new

    @rule()
    def purge(self) -> None:
        done = self.cli("purge", "--today", self.today.isoformat())
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        self._expect_nothing_sent()

    @rule()
    def receive(self) -> None:
        ACTIONS["receive"] += 1
        done = run_cli("receive", "--config", str(self.install / "receive" / f"{LOCAL}.toml"), "--once",
                       env_extra={"FLUX_PMI_NOW": _now(self.today)})
        assert done.returncode in (0, 3, 5), done.stdout + done.stderr[-3000:]
        self._expect_nothing_sent()

    def _expect_nothing_sent(self) -> None:
        new = self._new_files()
        assert not new, f"sent without being asked: {sorted(new)}"

    def _expect_only_unheld(self) -> None:
        new = self._new_files()
        assert not [k for k in new if k[0] in self.held | self.disabled], f"a held or disabled partner received {sorted(new)}"

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def every_record_at_most_once(self) -> None:
        twice = [fp for fp, n in self.fingerprints.items() if n > 1]
        assert not twice, f"{len(twice)} record(s) delivered twice"
        for key, n in self.counts.items():
            assert n <= self.expected[key], f"{key}: {n} delivered, {self.expected[key]} dropped"

    @invariant()
    def sequences_have_no_gap(self) -> None:
        seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
        for dept, name in self.seen:
            m = NAME_RE.match(name)
            if not m.group(5):
                seqs[(dept, m.group(1))].append(int(m.group(4)))
        for key, got in seqs.items():
            assert sorted(got) == list(range(1, len(got) + 1)), f"{key}: sequences {sorted(got)}"

    @invariant()
    def nothing_personal_outside_sealed_files(self) -> None:
        if not self.personal:
            return
        needles = [v.encode() for v in self.personal] + [v.encode("iso-8859-1", "ignore") for v in self.personal]
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root)
            parts = set(rel.parts)
            if not path.is_file() or parts & HOLDERS or path.name.endswith(".p7m"):
                continue
            data = dump_sqlite(path) if path.suffix == ".sqlite" else path.read_bytes()
            hits = [n for n in needles if len(n) >= 5 and n in data]
            assert not hits, f"personal data in {rel}"

    def teardown(self) -> None:
        try:
            if not self.partner.running:
                self.partner.start()
            for dept in sorted(self.held):
                assert self.cli("resume", dept, "--by", "model").returncode in (0, 6)
            self.held.clear()
            for dept in sorted(self.disabled):
                self._set_enabled(dept, True)
            self.disabled.clear()
            done = self.cli("run", "--date", self.today.isoformat())
            assert done.returncode == 0, done.stdout + done.stderr[-3000:]
            self._new_files()
            missing = {k: (self.counts[k], n) for k, n in self.expected.items() if self.counts[k] != n}
            assert not missing, f"(delivered, dropped) differ: {missing}"
            self.every_record_at_most_once()
            self.sequences_have_no_gap()
            left = [k for k in self._partner_files(".*") if k not in self.seen]
            assert not left, f"temporary files left in the drops after a clean run: {left}"
        finally:
            self.pool.close()


@pytest.fixture(scope="module")
def client_key(tmp_path_factory) -> tuple[Path, str]:
    require_tools()
    d = tmp_path_factory.mktemp("model-key")
    return d / "id_ed25519", generate_key(d / "id_ed25519")


def test_operator_days_lose_nothing_and_send_nothing_unasked(tmp_path, client_key):
    OperatorDays.base = tmp_path
    OperatorDays.client_key = client_key
    OperatorDays.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck),
        # Shrinking replays whole nights for many minutes: by hand only (FLUX_PMI_MODEL_SHRINK=1).
        phases=list(Phase) if os.environ.get("FLUX_PMI_MODEL_SHRINK") else [Phase.explicit, Phase.generate],
    )
    OperatorDays.TestCase().runTest()
    print(f"model: {dict(ACTIONS)}")
