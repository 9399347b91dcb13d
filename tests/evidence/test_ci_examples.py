"""The CI examples under examples/ci/: valid YAML, every ``opsgate`` command line accepted by the real CLI, and
each job publishing junit.xml to the CI's test view and uploading reports/ even when opsgate failed it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from opsgate.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"
WORKFLOWS = ("pre-promotion-gate", "weekly-drill", "release-signoff")
GITHUB = {name: EXAMPLES / "github" / f"{name}.yml" for name in WORKFLOWS}
GITLAB = EXAMPLES / "gitlab" / ".gitlab-ci.yml"
OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "("}
AFTER_A_FAILURE = ("always()", "!cancelled()", "failure()", "cancelled()")
"""An ``if:`` that lets a step run after an earlier step failed (GitHub skips it otherwise)."""


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def opsgate_commands(script: str) -> list[list[str]]:
    """The argument lists of every ``opsgate ...`` command in a shell script (continuations joined, pipes split)."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        segment: list[str] = []
        for token in [*lexer, ";"]:
            if token in OPERATORS or set(token) <= set("|&;<>()"):
                while segment and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", segment[0]):
                    segment = segment[1:]  # VAR=value opsgate ...
                if segment and segment[0] == "opsgate":
                    commands.append(segment[1:])
                segment = [] if token != ">" else ["(redirect)"]
            elif segment != ["(redirect)"]:
                segment.append(token)
    return commands


def check_parses(args: list[str], where: str) -> str:
    """Parse ``opsgate ARGS`` with the real click command (options, types, arity); returns the subcommand."""
    assert args and args[0] in main.commands, f"{where}: `opsgate {' '.join(args)}`: no such command"
    command = main.commands[args[0]]
    try:
        command.make_context(args[0], list(args[1:]))
    except click.ClickException as exc:
        raise AssertionError(f"{where}: `opsgate {shlex.join(args)}`: {exc.format_message()}") from None
    return args[0]


# --- GitHub Actions ------------------------------------------------------------------------------------------------


def steps_of(workflow: dict[Any, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_name, step) for job_name, job in workflow["jobs"].items() for step in job["steps"]]


@pytest.mark.parametrize("name", list(GITHUB))
def test_github_workflow_commands_parse_with_the_cli(name: str) -> None:
    workflow = load(GITHUB[name])
    commands = [args for _, step in steps_of(workflow) for args in opsgate_commands(step.get("run", ""))]
    parsed = [check_parses(args, f"{GITHUB[name].name}") for args in commands]
    wanted = {"pre-promotion-gate": {"gate", "freshness"}, "weekly-drill": {"drill"},
              "release-signoff": {"gate", "load", "freshness", "signoff"}}[name]  # fmt: skip
    assert wanted <= set(parsed), parsed
    runs = [args for args in commands if args[0] in ("gate", "drill", "load")]
    assert runs and all("--target" in args and "targets/staging.yaml" in args for args in runs)
    if name == "weekly-drill":
        assert any(args[0] == "drill" and "--allow-destructive" in args for args in commands)
    if name == "release-signoff":
        assert ["--release", "$RELEASE"] in [args[i : i + 2] for args in commands for i in range(len(args))]
        assert any(args[0] == "signoff" and "--verify" in args and "--expect-digest" in args for args in commands)


def runs_a_suite(step: dict[str, Any]) -> bool:
    """True for a step running ``opsgate gate``, ``drill`` or ``load`` (those write junit.xml)."""
    return any(args[0] in ("gate", "drill", "load") for args in opsgate_commands(step.get("run", "")))


@pytest.mark.parametrize("name", list(GITHUB))
def test_github_workflow_publishes_junit_and_uploads_reports_always(name: str) -> None:
    workflow = load(GITHUB[name])
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers, "no trigger"
    if name == "weekly-drill":
        assert triggers["schedule"][0]["cron"].split()[4] == "1"  # weekly, on Mondays
    if name == "release-signoff":
        assert triggers["push"]["tags"]
    for job_name, job in workflow["jobs"].items():
        steps = job["steps"]
        running = [i for i, step in enumerate(steps) if runs_a_suite(step)]
        if not running:
            continue  # the verify job: no suite runs, nothing to report
        junit = [s for s in steps if str(s.get("uses", "")).startswith(("mikepenz/action-junit-report", "dorny/test"))]
        upload = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
        assert junit and "junit.xml" in str(junit[0]["with"]), f"{job_name}: no junit.xml report step"
        assert upload and "reports/" in upload[0]["with"]["path"], f"{job_name}: reports/ is not uploaded"
        first = running[0]
        for step in steps[first + 1 :]:  # a failed gate must not skip what comes after it
            assert any(word in str(step.get("if", "")) for word in AFTER_A_FAILURE), (job_name, step.get("name"))
        for step in steps:  # ... and must still fail the job
            assert not step.get("continue-on-error"), (job_name, step.get("name"))
        assert "continue-on-error" not in job


# --- GitLab CI -----------------------------------------------------------------------------------------------------


def gitlab_jobs() -> dict[str, dict[str, Any]]:
    """The jobs of the GitLab file with their ``extends`` merged in (deep, like GitLab)."""
    data = load(GITLAB)

    def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    jobs = {}
    for name, job in data.items():
        if name.startswith(".") or not isinstance(job, dict) or "script" not in job:
            continue
        for parent in [job["extends"]] if isinstance(job.get("extends"), str) else job.get("extends", []):
            job = merged(data[parent], job)
        jobs[name] = job
    return jobs


def script_of(job: dict[str, Any], key: str = "script") -> str:
    def flat(items: Any) -> list[str]:
        return [s for item in items for s in (flat(item) if isinstance(item, list) else [str(item)])]

    return "\n".join(flat(job.get(key, [])))


def test_gitlab_file_commands_parse_with_the_cli() -> None:
    jobs = gitlab_jobs()
    assert {"pre-promotion-gate", "weekly-drill", "release-signoff"} <= set(jobs)
    found: dict[str, set[str]] = {}
    for name, job in jobs.items():
        scripts = "\n".join(script_of(job, key) for key in ("before_script", "script", "after_script"))
        commands = opsgate_commands(scripts)
        found[name] = {check_parses(args, f"{GITLAB.name}: {name}") for args in commands}
        assert all("targets/staging.yaml" in args for args in commands if args[0] in ("gate", "drill", "load"))
    assert {"gate", "freshness"} <= found["pre-promotion-gate"]
    assert "drill" in found["weekly-drill"] and "--allow-destructive" in script_of(jobs["weekly-drill"])
    assert {"gate", "load", "signoff"} <= found["release-signoff"]
    assert '--release "$CI_COMMIT_TAG"' in script_of(jobs["release-signoff"])
    assert "signoff" in found["verify-signoff"] and "--expect-digest" in script_of(jobs["verify-signoff"])


def test_gitlab_jobs_publish_junit_and_keep_reports_always() -> None:
    jobs = gitlab_jobs()
    rules = {name: str(jobs[name].get("rules")) for name in jobs}
    assert "schedule" in rules["weekly-drill"] and "CI_COMMIT_TAG" in rules["release-signoff"]
    for name in ("pre-promotion-gate", "weekly-drill", "release-signoff"):
        artifacts = jobs[name]["artifacts"]
        assert artifacts["when"] == "always", name
        assert "reports/" in artifacts["paths"], name
        assert "junit.xml" in artifacts["reports"]["junit"], name
        assert not jobs[name].get("allow_failure"), name  # a failed gate fails the pipeline
    assert "dotenv" in jobs["release-signoff"]["artifacts"]["reports"]  # the digest, outside the bundle


def test_the_command_extractor_sees_through_shell_syntax() -> None:
    script = 'set -e\nRELEASE=v1 opsgate signoff --release "$RELEASE" | tee out && opsgate \\\n  freshness --env x\n'
    assert opsgate_commands(script) == [["signoff", "--release", "$RELEASE"], ["freshness", "--env", "x"]]
    with pytest.raises(AssertionError, match="No such option"):
        check_parses(["gate", "--targte", "t.yaml"], "here")
