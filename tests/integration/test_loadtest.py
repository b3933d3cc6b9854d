"""``zonechat loadtest`` end to end: Locust headless against a real cluster, small enough for CI.

50 users chat in one room for 15 steady seconds; the run must write Locust's CSV and HTML
reports and a summary with deliveries, latencies, process samples and zero correctness
errors, and exit 0.

Then the same command from an installed copy, outside the checkout: a wheel built from the
packages pyproject.toml lists, installed with ``pip --target``, run by the base interpreter
with only that directory and the venv's site-packages (the dependencies) on PYTHONPATH, so
neither the checkout nor the venv's editable install can stand in for a missing file.
"""
import glob
import html
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import tomllib

import pytest

from harness import REPO

RUN_TIMEOUT = 55.0
BUILD_TIMEOUT = 120.0


def test_loadtest_world_writes_reports_and_passes(cluster, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "loadtest", "world", "--users", "50", "--duration", "15",
         "--out", str(tmp_path), "-c", cluster.config_path],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "steady: 50 users logged in" in out.stdout     # progress was shown
    [report] = glob.glob(os.path.join(str(tmp_path), "loadtest-world-*"))
    for name in ("locust_stats.csv", "locust_failures.csv", "locust_stats_history.csv", "locust.html",
                 "results.json", "samples.json", "summary.json", "summary.md", "summary.html"):
        assert os.path.getsize(os.path.join(report, name)) > 0, name

    with open(os.path.join(report, "summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    assert summary["verdict"] == "pass", summary["reasons"]
    assert summary["correctness"]["errors"] == 0, summary["correctness"]
    steady = summary["steady"]
    assert steady["users"] == 50 and steady["seconds"] >= 14
    assert steady["msgs_in"] > 0 and steady["deliveries"] > steady["msgs_in"]   # a room fans out
    assert steady["deliveries_per_s"] > 0 and steady["e2e_ms"]["p99"] is not None
    assert steady["ack_ms"]["p50"] is not None
    assert summary["total"]["login_ms"]["count"] == 50
    assert summary["held_users"] == 50 and summary["verdict_line"].startswith("verdict: the cluster ")
    with open(os.path.join(report, "summary.md"), encoding="utf-8") as fh:
        assert fh.readline().rstrip("\n") == summary["verdict_line"]
    names = {p["name"] for p in summary["processes"]}
    assert {"redis", "gate1", "gate2", "zone1", "center1"} <= names
    assert all(p["rss_mb_max"] > 0 for p in summary["processes"])
    with open(os.path.join(report, "locust_stats.csv"), encoding="utf-8") as fh:
        assert "send→msg" in fh.read()


# -- from an installed copy ---------------------------------------------------------------
TOP_PACKAGES = ("cluster", "client", "gate", "login", "center", "zone", "dc", "log", "tools")
WHERE = """
import json, sys
import cluster, client, gate, login, center, zone, dc, log, tools.load, tools.load.command
mods = {m.__name__: m.__file__ for m in (cluster, client, gate, login, center, zone, dc, log, tools.load)}
print(json.dumps({"modules": mods, "path": sys.path, "finders": [repr(f) for f in sys.meta_path],
                  "locustfile": tools.load.command.LOCUSTFILE}))
"""


def _can_build_wheels() -> bool:
    if importlib.util.find_spec("wheel") is not None:
        return True
    try:
        import setuptools.command.bdist_wheel  # noqa: F401  (setuptools >= 70.1)
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, env, site dir) of zonechat installed from a wheel, outside the checkout.

    The wheel is built from a copy of pyproject.toml, README.md and the top-level package
    directories pyproject lists (built in place, pip would leave build/ in the checkout),
    offline: ``--no-build-isolation`` uses this venv's setuptools and wheel."""
    if not _can_build_wheels():
        pytest.skip("building a wheel offline needs the 'wheel' package (pip install wheel)")
    root = tmp_path_factory.mktemp("installed")
    src, wheels, target = root / "src", root / "wheels", root / "site"
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        packages = tomllib.load(fh)["tool"]["setuptools"]["packages"]
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    for top in sorted({p.split(".")[0] for p in packages}):
        shutil.copytree(os.path.join(REPO, top), src / top,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]

    def run(*args: str) -> None:
        out = subprocess.run(pip + list(args), cwd=str(root), capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    run("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(src))
    [wheel] = glob.glob(str(wheels / "zonechat-*.whl"))
    run("install", "--no-deps", "--no-index", "--target", str(target), wheel)
    # The base interpreter: the venv's site-packages on PYTHONPATH is a plain directory, so
    # its .pth files (the editable install's finder, which maps to the checkout) never run.
    python = getattr(sys, "_base_executable", None) or sys.executable
    deps = [p for p in site.getsitepackages() if os.path.isdir(p)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ZONECHAT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(target)] + deps)
    env["PYTHONNOUSERSITE"] = "1"
    return python, env, str(target)


def test_installed_copy_imports_nothing_from_the_checkout(installed, tmp_path):
    python, env, target = installed
    out = subprocess.run([python, "-c", WHERE], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-4000:]
    where = json.loads(out.stdout)
    for name, path in where["modules"].items():
        assert os.path.realpath(path).startswith(os.path.realpath(target) + os.sep), (name, path)
    assert where["locustfile"].startswith(target) and os.path.isfile(where["locustfile"])
    repo = os.path.realpath(REPO)
    assert not [p for p in where["path"] if p and os.path.realpath(p) == repo], where["path"]
    assert not [f for f in where["finders"] if "editable" in f.lower()], where["finders"]


def test_loadtest_runs_from_an_installed_copy(cluster, installed, tmp_path):
    python, env, _target = installed
    work, out_dir = tmp_path / "cwd", tmp_path / "reports"
    work.mkdir()
    out = subprocess.run(
        [python, "-c", "from cluster.cli import main; main()", "loadtest", "world", "--users", "50",
         "--duration", "5", "--out", str(out_dir), "-c", cluster.config_path],
        cwd=str(work), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    [report] = glob.glob(os.path.join(str(out_dir), "loadtest-world-*"))
    with open(os.path.join(report, "summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    assert summary["verdict"] == "pass", summary["reasons"]
    assert summary["steady"]["users"] == 50 and summary["steady"]["msgs_in"] > 0
    assert summary["correctness"]["errors"] == 0, summary["correctness"]
    with open(os.path.join(report, "summary.html"), encoding="utf-8") as fh:   # its static files were installed
        page = fh.read()
    assert "uPlot" in page and html.escape(summary["verdict_line"]) in page
