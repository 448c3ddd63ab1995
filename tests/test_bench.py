"""The benchmark harness runs end to end on a small night and prints every figure docs/performance.md uses.

Not a timed test: the figures are only checked to be there and plausible (the speed is
reported by `make bench`, not asserted). Three départements, one day: the same code path as
the national run (real sshd partners, flux-pmi over SFTP, the shell pipeline, the catch-up).
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from support.sshd import require_tools

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"
FIELDS = {"scenario", "records", "files", "bytes", "wall_s", "cpu_s", "peak_rss_mb"}


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_bench_reports_night_shell_and_catch_up(tmp_path):
    require_tools()
    done = subprocess.run(
        [sys.executable, str(RUN), "--departments", "035,048,971", "--days", "1", "--json", "--work", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout)
    assert set(record["machine"]) == {"nproc", "cpu", "ram_gb", "os", "python", "openssh", "openssl", "loadavg"}
    assert "OpenSSH" in record["machine"]["openssh"] and "OpenSSL" in record["machine"]["openssl"]
    results = record["results"]
    assert set(results) == {"night", "shell", "catch_up"}
    for m in results.values():
        assert set(m) == FIELDS
        assert m["wall_s"] > 0 and m["cpu_s"] > 0 and m["peak_rss_mb"] > 0
    night, shell, catch_up = results["night"], results["shell"], results["catch_up"]
    # three flows for three départements, pushed by both sides; one day in the catch-up is the night again
    assert night["files"] == shell["files"] == catch_up["files"] == 9
    assert night["records"] == shell["records"] == catch_up["records"] > 0
    assert night["peak_rss_mb"] > shell["peak_rss_mb"] / 10  # flux-pmi's Python process, not /usr/bin/time's
    assert set(record["ratios"]) == {"night_wall_vs_shell", "night_cpu_vs_shell", "catch_up_rss_vs_night"}
    assert record["ratios"]["night_wall_vs_shell"] == round(night["wall_s"] / shell["wall_s"], 3)
    # the same files pushed again by each SSH library (bench/ssh_libraries.py): all of the night's,
    # then the catch-up's largest (here all nine), every one arrived (compare() counts them)
    libraries = record["ssh_libraries"]
    assert [(m["library"], m["scenario"]) for m in libraries] == [
        ("paramiko", "night"), ("asyncssh", "night"), ("paramiko", "catch_up"), ("asyncssh", "catch_up")]
    for m in libraries:
        assert m["files"] == 9 and m["bytes"] > 0 and m["wall_s"] > 0 and m["client_cpu_s"] > 0
    assert libraries[0]["bytes"] == night["bytes"]
    # the working folder is removed, and so are the partners' data roots
    assert not (tmp_path / "w").exists()

    bench = _bench_module()
    table = bench.text_report(bench.Machine(**record["machine"]),
                              {k: bench.Measure(**m) for k, m in results.items()}, days=1)
    for label in ("nproc:", "cpu:", "OpenSSH", "flux-pmi night", "shell night", "flux-pmi 1-day",
                  "wall s", "CPU s", "peak RSS MB", "night_wall_vs_shell:"):
        assert label in table
    lines = bench.libraries_report([bench.ssh_libraries.LibraryMeasure(**m) for m in libraries], asked=True)
    assert any(line.startswith("asyncssh (catch_up)") for line in lines)
    assert "not installed" in bench.libraries_report([], asked=True)[-1]
