"""Configuration: the shipped registry, validation messages, secrets, and `flux-pmi check`."""

from __future__ import annotations

import os

import pytest
from support import NOW, run_cli

from flux_pmi.config.settings import load, load_registry
from flux_pmi.core.errors import ConfigError, ExitCode
from flux_pmi.flows.codes import RECIPIENTS
from flux_pmi.jobs.preflight import run_checks


def test_the_shipped_registry_holds_the_101_departements_and_the_metropole_de_lyon_disabled():
    reg = load_registry()
    assert len(reg) == 102 and {"035", "02A", "02B", "971", "976", "69M"} <= set(reg)
    assert set(reg) == set(RECIPIENTS)
    assert all(r.transport == {"type": "disabled"} and r.certificate == "" for r in reg.values())
    assert reg["02A"].numorg == ("201",) and reg["067"].holiday_zone == "alsace-moselle"


def test_only_listed_or_filled_in_departements_are_enabled(demo):
    root, _ = demo
    s = load(root / "flux-pmi.toml")
    assert sorted(d.code for d in s.enabled_departments()) == ["02A", "035", "067", "971"]
    assert s.departments["013"].enabled is False and s.departments["013"].transport.type == "disabled"


def _edit(root, old, new):
    cfg = root / "flux-pmi.toml"
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new, 1))
    return cfg


@pytest.mark.parametrize("old,new,key,expected", [
    ("[delivery]", "[delivery]\nparalel = 3", "delivery.paralel", "unknown key"),
    ("parallel = 16", "parallel = \"eight\"", "delivery.parallel", "a whole number"),
    ("parallel = 16", "parallel = 0", "delivery.parallel", "greater than 0"),
    ('certificate = "pki/035.crt"', 'certificate = "pki/nope.crt"', "departments.035.certificate", "not found"),
    ('[departments."035"]', '[departments."035"]\ntransport = { type = "ftp" }', "departments.035.transport.type",
     "one of"),
    ('[departments."035"]', '[departments."35"]\n[departments."035"]', "departments.35", "3 characters"),
    ('[departments."035"]', '[departments."035"]\ntransport = { type = "sftp", host = "h" }',
     "departments.035.transport.user", "missing"),
])
def test_errors_name_the_file_the_key_and_what_is_expected(demo, old, new, key, expected):
    root, _ = demo
    cfg = _edit(root, old, new)
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert info.value.file == str(cfg) and info.value.key == key and expected in info.value.expected


def test_secrets_come_from_the_environment_or_an_owner_only_file(demo, monkeypatch):
    root, _ = demo
    table = ('[departments."035"]\ntransport = { type = "sftp", host = "h", user = "u", key = "k", '
             'known_hosts = "kh", directories = { GRO = "/in" }, %s }')
    cfg = _edit(root, '[departments."035"]', table % 'key_passphrase_env = "FLUX_TEST_PASS"')
    monkeypatch.delenv("FLUX_TEST_PASS", raising=False)
    with pytest.raises(ConfigError, match="FLUX_TEST_PASS to be set"):
        load(cfg)
    monkeypatch.setenv("FLUX_TEST_PASS", "s3cret")
    t = load(cfg).departments["035"].transport
    assert t.secret == b"s3cret" and "s3cret" not in repr(t)
    secret = root / "pass.txt"
    secret.write_text("from-file\n")
    os.chmod(secret, 0o644)
    cfg.write_text(cfg.read_text().replace('key_passphrase_env = "FLUX_TEST_PASS"', 'key_passphrase_file = "pass.txt"'))
    with pytest.raises(ConfigError, match="readable by its owner only"):
        load(cfg)
    os.chmod(secret, 0o600)
    assert load(cfg).departments["035"].transport.secret == b"from-file"


def test_a_departement_is_enabled_by_filling_in_a_copy_of_the_registry(demo):
    root, _ = demo
    text = load_registry.__globals__["REGISTRY_FILE"].read_text()
    i = text.index('[departments."013"]')
    j = text.index("\n\n", i)
    filled = (text[i:j].replace('certificate = ""', f'certificate = "{root}/pki/035.crt"')
              .replace('{ type = "disabled" }', '{ type = "local", root = "drop" }'))
    text = text[:i] + filled + text[j:]
    (root / "registry.toml").write_text(text)
    cfg = _edit(root, "[delivery]", '[registry]\nfile = "registry.toml"\n\n[delivery]')
    assert load(cfg).departments["013"].enabled


def test_a_registry_accepts_69m_and_refuses_codes_that_are_no_recipient(tmp_path):
    text = load_registry.__globals__["REGISTRY_FILE"].read_text()
    assert load_registry()["69M"].chef_lieu_code == "69123"
    for bad in ("69X", "020", "975", "69"):
        (tmp_path / "registry.toml").write_text(text.replace('[departments."69M"]', f'[departments."{bad}"]'))
        with pytest.raises(ConfigError, match=f"departments.{bad}"):
            load_registry(tmp_path / "registry.toml")


def test_an_operator_can_enable_the_metropole_de_lyon_and_the_demo_knows_it(demo):
    from flux_pmi.demo.setup import parse_departments

    root, _ = demo
    cfg = _edit(root, "[delivery]", f'[departments."69M"]\ncertificate = "{root}/pki/035.crt"\n'
                f'transport = {{ type = "local", root = "drop" }}\n\n[delivery]')
    s = load(cfg)
    assert s.departments["69M"].enabled and s.departments["69M"].name == "Métropole de Lyon"
    assert s.departments["069"].enabled is False
    assert parse_departments("69m, 069") == ["069", "69M"] and "69M" in parse_departments("all")
    assert len(parse_departments("all")) == 102


def test_check_reports_certificates_and_partners_without_sending_data(demo):
    root, _ = demo
    findings = run_checks(load(root / "flux-pmi.toml"), NOW)
    assert all(f.ok for f in findings)
    assert {f.scope for f in findings} >= {"sender", "archive", "035", "02A", "067", "971"}
    assert any(f.warning and "demo value" in f.what for f in findings)  # the demo marks its SIRETs
    assert not list((root / "drop").rglob("*.p7m"))


def test_check_flags_an_expiring_and_an_expired_certificate(demo):
    from datetime import timedelta

    root, _ = demo
    soon = run_checks(load(root / "flux-pmi.toml"), NOW + timedelta(days=712))
    assert any(f.warning and "expires in" in f.what for f in soon)
    late = run_checks(load(root / "flux-pmi.toml"), NOW + timedelta(days=800))
    assert any(not f.ok and "unusable" in f.what for f in late)


def test_check_command_exit_codes(demo):
    root, _ = demo
    ok = run_cli("check", "--config", str(root / "flux-pmi.toml"))
    assert ok.returncode == 0 and "0 error(s)" in ok.stdout
    (root / "pki" / "067.crt").write_text("not a certificate")
    bad = run_cli("check", "--config", str(root / "flux-pmi.toml"))
    assert bad.returncode == ExitCode.CHECK_FAILED and "ERROR 067" in bad.stdout


def test_a_config_path_that_does_not_exist_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.toml: \(file\): no such file: check the --config path"):
        load(tmp_path / "missing.toml")


def test_a_config_saved_with_a_byte_order_mark_or_windows_line_ends_loads(demo):
    # A Windows editor's invisible BOM made TOML refuse the file "at line 1, column 1".
    root, _ = demo
    cfg = root / "flux-pmi.toml"
    plain = load(cfg)
    text = cfg.read_text()
    cfg.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    again = load(cfg)
    assert again.departments.keys() == plain.departments.keys() and again.paths == plain.paths
    cfg.write_bytes(b"\xef\xbb\xbf" + "# caf\xe9\n".encode("latin-1") + text.encode("utf-8"))
    with pytest.raises(ConfigError, match="UTF-8 text"):
        load(cfg)
