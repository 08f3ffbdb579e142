"""The manual pages (tools/mkman.py) against what --help prints.

The pages are generated from the parsers at build time; these tests read
--help as a user would and check that the page has every option, in both
directions, and the same exit statuses, so that neither the generator nor a
new option can leave the page behind.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from types import ModuleType

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_mkman() -> ModuleType:
    """tools/mkman.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("mkman", os.path.join(REPO, "tools", "mkman.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mkman"] = module
    spec.loader.exec_module(module)
    return module


mkman = _load_mkman()

PROGRAMS = sorted(mkman.PAGES)
OPTION = re.compile(r"(?<![\w\\-])(--?[A-Za-z][A-Za-z0-9-]*)")


def help_text(program: str, capsys: pytest.CaptureFixture[str]) -> str:
    module = importlib.import_module(mkman.PAGES[program].module)
    with pytest.raises(SystemExit) as exited:
        module.parse_args(["--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def help_options(text: str) -> set[str]:
    """Options as --help lists them: the first words of the "options:" lines."""
    block = text.split("options:", 1)[1].split("exit status:", 1)[0]
    found: set[str] = set()
    for line in block.splitlines():
        head = line.strip().split("  ", 1)[0]  # "-n, --dry-run" before the help text
        if head.startswith("-"):
            found.update(OPTION.findall(head))
    return found


def page_options(page: str) -> set[str]:
    """Options as the page lists them: the terms of the OPTIONS section."""
    block = page.split(".SH OPTIONS", 1)[1].split(".SH ", 1)[0]
    terms = re.findall(r"^\.TP\n(.*)$", block, flags=re.MULTILINE)
    return {name.replace("\\-", "-") for term in terms for name in re.findall(r"\\fB(.*?)\\fR", term)}


def help_statuses(text: str) -> list[str]:
    block = text.split("exit status:", 1)[1]
    return re.findall(r"^\s+(\d+)\s", block, flags=re.MULTILINE)


@pytest.mark.parametrize("program", PROGRAMS)
def test_page_lists_exactly_the_options_of_help(program: str, capsys: pytest.CaptureFixture[str]) -> None:
    wanted = help_options(help_text(program, capsys))
    assert {"-h", "--help", "-v", "--verbose", "--timeout"} <= wanted
    assert page_options(mkman.page(program)) == wanted


@pytest.mark.parametrize("program", PROGRAMS)
def test_page_lists_the_exit_statuses_of_help(program: str, capsys: pytest.CaptureFixture[str]) -> None:
    page = mkman.page(program)
    block = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    listed = re.findall(r"^\\fB(\d+)\\fR$", block, flags=re.MULTILINE)
    assert listed == help_statuses(help_text(program, capsys))
    assert "0" in listed and "1" in listed


@pytest.mark.parametrize("program", PROGRAMS)
def test_page_has_every_section(program: str) -> None:
    page = mkman.page(program)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "EXIT STATUS", "FILES",
                    "EXAMPLES", "SEE ALSO"):
        assert f"\n.SH {section}\n" in page, section
    assert page.splitlines()[1].startswith(f".TH {program.upper()} 8 ")


def test_systemd_unit_documents_a_page_we_ship() -> None:
    with open(os.path.join(REPO, "systemd", "qubes-setup-dnat-to-ns-watch.service")) as handle:
        refs = re.findall(r"^Documentation=(.*)$", handle.read(), flags=re.MULTILINE)
    pages = {f"man:{program}(8)" for program in PROGRAMS}
    assert refs and all(ref in pages for line in refs for ref in line.split())


@pytest.mark.subprocess
def test_groff_formats_the_pages_without_warnings(tmp_path: object) -> None:
    groff = shutil.which("groff")
    assert groff, "groff (groff-base, pulled in by man-db) is needed to check the pages"
    assert mkman.main([str(tmp_path)]) == 0
    for program in PROGRAMS:
        path = os.path.join(str(tmp_path), f"{program}.8")
        result = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", path], check=False,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and result.stderr == "", result.stderr
