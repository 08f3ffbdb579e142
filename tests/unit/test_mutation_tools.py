"""The mutation tools' own logic (tools/mutation.py, tools/mutation_sample.py):
the parts a slow run would only reveal at its end."""

from __future__ import annotations

import re

from tools import mutation, mutation_sample
from tools.mutation_sample import GROUPS, OPERATORS, ROOT, Mutant, config, explained, matches


def _excluded(cfg: str) -> re.Pattern[str]:
    """The exclusion pattern as cosmic-ray's operators filter builds it."""
    line = next(x for x in cfg.splitlines() if x.startswith("exclude-operators = "))
    patterns = re.findall(r'"((?:[^"\\]|\\.)*)"', line.split("=", 1)[1])
    return re.compile("|".join(f"(:?{p.encode().decode('unicode_escape')})" for p in patterns))


def test_the_operator_filter_keeps_exactly_the_chosen_operators() -> None:
    excluded = _excluded(config(GROUPS[0], ROOT))
    for name in OPERATORS:
        assert not excluded.match(name), name
    for name in ("core/ReplaceComparisonOperator_Eq_Lt", "core/ReplaceComparisonOperator_Lt_Gt",
                 "core/ReplaceBinaryOperator_Add_Mul", "core/ReplaceBinaryOperator_Sub_AddX", "core/VariableReplacer",
                 "core/ExceptionReplacer", "core/ZeroIterationForLoop", "core/NumberReplacerX"):
        assert excluded.match(name), name


def test_every_group_names_files_that_exist() -> None:
    for group in GROUPS:
        for path in group.modules + group.tests:
            assert (ROOT / path).is_file(), path


def test_the_explained_table_parses_and_names_modules_of_the_sample() -> None:
    rows = explained()
    assert rows, "docs/testing.md explains no survivor"
    sampled = {m for g in GROUPS for m in g.modules}
    for module, code, mutant, why in rows:
        assert module in sampled and code != mutant and why.strip(), (module, code)


def test_a_row_matches_by_module_line_and_mutant_only() -> None:
    row = ("a.py", "x = a | b", "x = a & b", "why")
    assert matches(Mutant("a.py", 9, "x = a | b", "x = a & b", "f"), row)
    assert not matches(Mutant("a.py", 9, "x = a | b", "x = a ^ b", "f"), row)
    assert not matches(Mutant("b.py", 9, "x = a | b", "x = a & b", "f"), row)


def test_every_curated_mutant_has_a_unique_id_and_somewhere_to_die() -> None:
    everything = mutation.all_mutants()
    ids = [m.id for m in everything]
    assert len(ids) == len(set(ids)) and len(everything) == len(mutation.MUTANTS) + len(mutation.BREADTH)
    assert all(m.unit or m.namespace for m in everything)
    for m in everything:
        for test in m.unit + m.namespace:
            assert (ROOT / test.split("::")[0]).is_file(), (m.id, test)
    assert mutation_sample.DOC.is_file()
