"""The README is part of the API: its example runs, and CI runs what it tells newcomers to run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_python_example_runs():
    blocks = code_blocks("python")
    assert blocks, "the README has no python example"
    for source in blocks:
        exec(compile(source, "README.md", "exec"), {})


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = [block.strip() for block in code_blocks("bash")]
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert main_job.startswith("pip install") and "qimia compare" in main_job
    install, test_command = (part.strip() for part in tests.split("&&"))
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci and test_command in ci
