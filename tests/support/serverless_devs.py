"""The real Serverless Devs 3 CLI (`s`, npm's `@serverless-devs/s`), run offline to render `s.yaml`.

`make setup` installs the pinned version into the virtual environment (`<venv>/serverless-devs/`, see
scripts/setup.sh); these helpers run it with a throwaway HOME, so neither the user's access aliases nor
their `~/.s` are read or written.

Offline, and why these switches (read in the CLI's bundled source, version 3.1.10):

* Every command spawns detached "daemon" processes (update check, usage report) that call the Serverless
  Devs registry; the CLI skips them when `NODE_ENV=test`.
* `s config add --AccessKeyID … --AccessKeySecret …` calls STS `GetCallerIdentity` on
  sts.cn-hangzhou.aliyuncs.com to check the AccountID. An alias made of the `AccountID` key alone
  (`--kl AccountID --il <id>`) is not an Alibaba key pair, so nothing is called, and `${config('AccountID')}`
  still reads it.
* `s preview` renders `${vars.x}`, `${env('NAME', 'default')}` and `${config('AccountID')}` locally; it
  downloads no component (`s deploy` would fetch fc3).
* `--silent` keeps the "run as root" warning out of stdout, which must be pure JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

CLI = Path(sys.prefix) / "serverless-devs" / "node_modules" / ".bin" / "s"
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup.sh"
TIMEOUT_SECONDS = 60  # each call takes about a second; the bound only stops a hung CLI
_PIN = re.compile(r"^SERVERLESS_DEVS_VERSION=(\S+)$", re.MULTILINE)


def pinned_version() -> str:
    """The version scripts/setup.sh installs (the one place it is written)."""
    match = _PIN.search(SETUP_SCRIPT.read_text(encoding="utf-8"))
    assert match, f"{SETUP_SCRIPT} pins no SERVERLESS_DEVS_VERSION"
    return match.group(1)


def require_cli() -> Path:
    if not CLI.is_file():
        pytest.fail(f"the Serverless Devs CLI is not installed at {CLI}: run `make setup`", pytrace=False)
    return CLI


@dataclass(frozen=True)
class ServerlessDevs:
    """One throwaway Serverless Devs home (`<home>/.s/`: access aliases, logs)."""

    home: Path

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment: nothing of the caller's (SEGFLOW_*, ALIBABA_CLOUD_*, a proxy) leaks in."""
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "NODE_ENV": "test",
        }
        environ.update(extra or {})
        return environ

    def run(
        self, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(require_cli()), *args, "--silent"],
            cwd=cwd or self.home,
            env=self.environment(env),
            stdin=subprocess.DEVNULL,  # a prompt must fail, not wait
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )

    def version(self) -> str:
        done = self.run("--version")
        match = re.search(r"@serverless-devs/s: (\S+),", done.stdout)
        assert done.returncode == 0 and match, f"`s --version` failed: {done.stdout}{done.stderr}"
        return match.group(1)

    def add_alias(self, account_id: str, alias: str = "default") -> None:
        """An access alias holding only an AccountID (module docstring: no STS call)."""
        done = self.run("config", "add", "--kl", "AccountID", "--il", account_id, "-a", alias)
        assert done.returncode == 0, f"`s config add` failed: {done.stdout}{done.stderr}"

    def render(self, template: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """`s preview -t <template> -o json`: the document `s deploy` would hand the components."""
        done = self.run("preview", "-t", template.name, "-o", "json", cwd=template.parent, env=env)
        assert done.returncode == 0, f"`s preview` failed:\n{done.stdout}{done.stderr}"
        try:
            document: dict[str, Any] = json.loads(done.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"`s preview -o json` printed no JSON ({exc}):\n{done.stdout}") from exc
        return document


def copy_template(source: Path, directory: Path, text: str | None = None) -> Path:
    """s.yaml copied alone into `directory`, so no `.env` of the checkout is read (the CLI loads the one
    beside the template). `text` replaces the content when given."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / source.name
    if text is None:
        shutil.copyfile(source, target)
    else:
        target.write_text(text, encoding="utf-8")
    return target
