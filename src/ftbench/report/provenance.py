"""The Provenance section: what made the report (git commit, params.yaml, packages) and what the stages
ran on."""

from __future__ import annotations

import hashlib
import subprocess

from ftbench.common import config
from ftbench.common.resources import package_versions
from ftbench.report.render import Section, Table


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance_section(resources: dict) -> Section:
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain") not in ("", "unknown") else ""
    devices = sorted({r.get("device", "-") for r in resources.values()})
    # the stages' own: a report made elsewhere (a study's metrics copied from a GPU machine) says so
    ran_on = sorted({r["packages"] for r in resources.values() if "packages" in r})
    environments = sorted({r["environment"] for r in resources.values() if "environment" in r})
    return "Provenance", [
        Table(
            ["what", "value"],
            [
                ["git commit", _git("rev-parse", "HEAD") + dirty],
                ["params.yaml sha256", hashlib.sha256(config.PARAMS_FILE.read_bytes()).hexdigest()[:16]],
                ["packages, the stages'", "; ".join(ran_on) or "-"],
                ["packages, this report's", package_versions()],
                # one digest of every installed version: more than one, and the stages ran on different ones
                ["environment digest, the stages'", ", ".join(environments) or "-"],
                ["device", ", ".join(devices)],
            ],
        )
    ]
