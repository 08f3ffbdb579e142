"""make mutation-sample: generated operator mutants of the pure modules, on the unit tier.

The mutants come from cosmic-ray (a well-kept mutation tool from PyPI,
installed in the venv by the ``test`` extra): every comparison, boolean,
boundary and constant in the modules of ``GROUPS`` (the DNS path's pure
modules, qubesnet/validate.py, the mapped namespace's NAT table), with the operators of
``OPERATORS`` (docs/testing.md says why these). This script is only the
glue cosmic-ray leaves to its user: a copy of the tree to mutate (cosmic-ray
edits the files it mutates in place), one session per group with the unit
tests that group answers to, and the verdict: every surviving mutant must be
explained in docs/testing.md (the table under SECTION), else exit 1.

Everything is written under build/mutation-sample/ (ignored by git); the
sessions stay there (``GROUP/session.sqlite``) for ``cr-report``/``cr-html``.

    .venv/bin/python tools/mutation_sample.py [--group NAME ...] [--jobs N] [--keep-tree]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation-sample"
DOC = ROOT / "docs" / "testing.md"
SECTION = "## Surviving operator mutants, explained"
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", ".venv-deb", ".bench-venv", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache",
    ".ruff_cache", ".hypothesis", "build", "dist", "*.egg-info", "_install", "mutants",
)
TIMEOUT = 60.0  # per mutant: a mutant that loops is killed by the time-out


@dataclass(frozen=True)
class Group:
    name: str
    modules: tuple[str, ...]
    tests: tuple[str, ...]  # the unit tests that answer for these modules


GROUPS = (
    Group("dns", ("setup_dnat_to_ns/derive.py", "setup_dnat_to_ns/chain.py", "setup_dnat_to_ns/upstreams.py"),
          ("tests/unit/test_dnat_plan.py", "tests/unit/test_dnat_derive.py", "tests/unit/test_dns_kills.py")),
    Group("validate", ("qubesnet/validate.py",),
          ("tests/unit/test_validate.py", "tests/unit/test_inputs.py", "tests/unit/test_edge_kills.py",
           "tests/unit/test_dnat_plan.py", "tests/unit/test_cli.py")),
    Group("mapped", ("vif_route_qubes/mapped.py", "vif_route_qubes/mapped_names.py"),
          ("tests/unit/test_mapped.py", "tests/unit/test_describe.py", "tests/unit/test_diff.py",
           "tests/unit/test_edge_kills.py")),
)

# Comparisons: negated (== and !=, < and >=, > and <=, is and is not) and
# moved across the boundary (< and <=, > and >=); booleans: and/or swapped,
# a condition negated, True and False swapped; constants: every number
# plus and minus one; + and - swapped. The other cosmic-ray operators
# (every comparison into every other, the bit and power operators, deleted
# decorators, exceptions replaced, variables swapped) are left out: mostly
# nonsense or equivalent here, and each costs a test run.
OPERATORS = (
    "core/ReplaceComparisonOperator_Eq_NotEq", "core/ReplaceComparisonOperator_NotEq_Eq",
    "core/ReplaceComparisonOperator_Lt_GtE", "core/ReplaceComparisonOperator_GtE_Lt",
    "core/ReplaceComparisonOperator_Gt_LtE", "core/ReplaceComparisonOperator_LtE_Gt",
    "core/ReplaceComparisonOperator_Lt_LtE", "core/ReplaceComparisonOperator_LtE_Lt",
    "core/ReplaceComparisonOperator_Gt_GtE", "core/ReplaceComparisonOperator_GtE_Gt",
    "core/ReplaceComparisonOperator_Is_IsNot", "core/ReplaceComparisonOperator_IsNot_Is",
    "core/ReplaceAndWithOr", "core/ReplaceOrWithAnd", "core/AddNot",
    "core/ReplaceTrueWithFalse", "core/ReplaceFalseWithTrue",
    "core/NumberReplacer",
    "core/ReplaceBinaryOperator_Add_Sub", "core/ReplaceBinaryOperator_Sub_Add",
)


class HarnessError(Exception):
    pass


def config(group: Group, tree: Path) -> str:
    """The session's cosmic-ray.toml: everything but OPERATORS is excluded."""
    python = Path(sys.executable)
    command = f"{python} -m pytest -x -q -p no:cacheprovider {' '.join(group.tests)}"
    keep = "|".join(re.escape(op) + "$" for op in OPERATORS)
    lines = [
        "[cosmic-ray]",
        f"module-path = {json.dumps([str(tree / m) for m in group.modules])}",
        f"timeout = {TIMEOUT}",
        "excluded-modules = []",
        f"test-command = {json.dumps(command)}",
        "",
        "[cosmic-ray.distributor]",
        'name = "local"',
        "",
        "[cosmic-ray.filters.operators-filter]",
        f"exclude-operators = {json.dumps(['(?!' + keep + ')'])}",
    ]
    return "\n".join(lines) + "\n"


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise HarnessError(f"{name} not found next to {sys.executable}: run make venv (cosmic-ray is a test extra)")
    return str(path)


def run(argv: list[str], cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(cwd), PYTHONDONTWRITEBYTECODE="1")
    env.pop("QUBES_REQUIRE_NETNS", None)
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


@dataclass(frozen=True)
class Mutant:
    module: str
    line: int
    code: str  # the unmutated source line, stripped
    mutant: str  # the same line mutated, stripped
    function: str


def mutated_line(source: str, operator: str, occurrence: int, line: int) -> str:
    """The source line ``line`` as cosmic-ray mutates it (its own mutate_code,
    in this process): with the original line, a mutant's identity that
    survives edits elsewhere in the file."""
    mutating = importlib.import_module("cosmic_ray.mutating")
    plugins = importlib.import_module("cosmic_ray.plugins")
    mutated = mutating.mutate_code(source, plugins.get_operator(operator)(), occurrence)
    if mutated is None:
        raise HarnessError(f"cosmic-ray cannot replay {operator} #{occurrence}")
    before, after = source.splitlines(), str(mutated).splitlines()
    changed = [n for n, (a, b) in enumerate(zip(before, after, strict=False)) if a != b]
    return after[changed[0] if changed else line - 1].strip()


def session(group: Group, keep_tree: bool) -> tuple[int, list[Mutant], float]:
    """(mutants tried, survivors, seconds) of one group, in its own copy of the tree."""
    started = time.monotonic()
    home = WORK / group.name
    tree = home / "tree"
    shutil.copytree(ROOT, tree, ignore=IGNORED, symlinks=True)
    try:
        return _session(group, home, tree, started)
    finally:
        if not keep_tree:
            shutil.rmtree(tree, ignore_errors=True)


def _session(group: Group, home: Path, tree: Path, started: float) -> tuple[int, list[Mutant], float]:
    cfg, db = home / "cosmic-ray.toml", home / "session.sqlite"
    cfg.write_text(config(group, tree))
    db.unlink(missing_ok=True)
    run([tool("cosmic-ray"), "init", str(cfg), str(db)], tree)
    run([tool("cr-filter-operators"), str(db), str(cfg)], tree)
    try:
        run([tool("cosmic-ray"), "baseline", str(cfg)], tree)
    except HarnessError as exc:
        raise HarnessError(f"the {group.name} tests fail on the unmutated tree:\n{exc}") from None
    run([tool("cosmic-ray"), "exec", str(cfg), str(db)], tree)
    tried, survivors = 0, []
    for row in run([tool("cosmic-ray"), "dump", str(db)], tree).splitlines():
        item, result = json.loads(row)
        if result is None:
            raise HarnessError(f"{group.name}: a mutant was not run: {row[:300]}")
        if result["worker_outcome"] == "skipped":
            continue
        if result["worker_outcome"] != "normal":
            raise HarnessError(f"{group.name}: cosmic-ray could not run a mutant: {row[:600]}")
        tried += 1
        if result["test_outcome"] == "survived":
            m = item["mutations"][0]
            module = str(Path(m["module_path"]).relative_to(tree))
            line = m["start_pos"][0]
            source = (tree / module).read_text()
            code = source.splitlines()[line - 1].strip()
            mutant = mutated_line(source, m["operator_name"], m["occurrence"], line)
            survivors.append(Mutant(module, line, code, mutant, m.get("definition_name") or ""))
    if tried and len(survivors) == tried:
        raise HarnessError(f"{group.name}: not one of {tried} mutants was killed: is the copy's code what the tests "
                           f"import? (PYTHONPATH={tree})")
    return tried, survivors, time.monotonic() - started


def explained() -> list[tuple[str, str, str, str]]:
    """(module, code, mutant, why) rows of the table in docs/testing.md."""
    text = DOC.read_text()
    if SECTION not in text:
        raise HarnessError(f"{DOC.relative_to(ROOT)} has no section {SECTION!r}")
    rows = []
    for line in text.split(SECTION, 1)[1].splitlines():
        if line.startswith("## "):
            break
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 4:
            raise HarnessError(f"{DOC.relative_to(ROOT)}: a row needs 4 cells: {line}")
        module, code, mutant, why = (c.strip("`") if i < 3 else c for i, c in enumerate(cells))
        rows.append((module, code, mutant, why))
    return rows


def matches(m: Mutant, row: tuple[str, str, str, str]) -> bool:
    module, code, mutant, _ = row
    return m.module == module and m.code == code and m.mutant == mutant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", action="append", choices=[g.name for g in GROUPS], help="only this group")
    parser.add_argument("--keep-tree", action="store_true", help="keep the copies of the tree (build/...)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="groups run side by side (default 1; each runs one test process at a time)")
    args = parser.parse_args(argv)
    if sys.prefix == sys.base_prefix:
        parser.error("run it with the project's venv (make mutation-sample): cosmic-ray and pytest come from there")

    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    chosen = [g for g in GROUPS if not args.group or g.name in args.group]
    results = []
    try:
        rows = explained()
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each session is one process at a time
            futures = [(g, pool.submit(session, g, args.keep_tree)) for g in chosen]
            for group, future in futures:
                tried, survivors, seconds = future.result()
                print(f"  {group.name}: {tried} mutants, {tried - len(survivors)} killed, {len(survivors)} survived "
                      f"({seconds:.0f} s)", flush=True)
                results.append((group, tried, survivors))
    except HarnessError as exc:
        print(f"mutation-sample: {exc}", file=sys.stderr)
        return 2

    unexplained: list[Mutant] = []
    used: set[int] = set()
    for _, _, survivors in results:
        for m in survivors:
            hits = [i for i, row in enumerate(rows) if matches(m, row)]
            used.update(hits)
            if not hits:
                unexplained.append(m)
    tried = sum(t for _, t, _ in results)
    survived = sum(len(s) for _, _, s in results)
    print(f"\n{tried} mutants: {tried - survived} killed, {survived - len(unexplained)} survived and explained in "
          f"{DOC.relative_to(ROOT)}, {len(unexplained)} survived unexplained; {time.monotonic() - started:.0f} s")
    modules = {m for group, _, _ in results for m in group.modules}
    for i, row in enumerate(rows):
        if i not in used and row[0] in modules:
            print(f"note: explained but not seen (killed now, or the line changed): {row[0]}: {row[1]}: {row[2]}")
    if unexplained:
        print("SURVIVED, unexplained (kill it with a test, or explain it in the table):", file=sys.stderr)
        for m in unexplained:
            code, mutant = (s.replace("|", "\\|") for s in (m.code, m.mutant))
            print(f"| `{m.module}` | `{code}` | `{mutant}` | ? |  <- line {m.line}, {m.function}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
