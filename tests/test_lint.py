"""`webhook lint`: every problem as path:line:column, CEL positions mapped into the file, non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TEST_POLICIES
from webhook.cli import main
from webhook.policies.cel import ENGINE_NAMES

HEADER = """\
apiVersion: webhook.dev/v1alpha1
kind: Policy
metadata:
  name: {name}
spec:
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["pods"]
"""


def lint(directory: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    code = main(["lint", str(directory), *extra])
    return code, capsys.readouterr().out.splitlines()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_and_test_policies_lint_clean(capsys: pytest.CaptureFixture[str]) -> None:
    for directory in (TEST_POLICIES, Path(__file__).parent.parent / "policies"):
        code, lines = lint(directory, capsys)
        assert code == 0, lines
        assert lines[-1].endswith("no problems")


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_cel_error_in_plain_scalar_points_into_the_expression(tmp_path: Path, engine: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "p.yaml", HEADER.format(name="p") + "  validations:\n    - expression: object.x == (\n")
    code, lines = lint(tmp_path, capsys, "--cel-engine", engine)
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:13:")
    column = int(lines[0].split(":")[2])
    assert 21 <= column <= 33  # inside `object.x == (` which starts at column 21
    assert "CEL compile error" in lines[0]


def test_cel_error_in_quoted_and_block_scalars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEADER.format(name="p") + (
        '  validations:\n'
        '    - expression: "object.a && undefinedThing"\n'      # line 13: column of u is 32
        '    - expression: |\n'                                   # line 14
        '        object.b == 1 &&\n'                              # line 15
        '          nothing.here\n'                                # line 16: the engine points at the '.' (column 18)
    )
    path = write(tmp_path, "p.yaml", text)
    code, lines = lint(tmp_path, capsys)
    assert code == 1
    assert lines == [
        f"{path}:13:32: CEL compile error: undeclared reference to 'undefinedThing' (in container '')",
        f"{path}:16:18: CEL compile error: undeclared reference to 'nothing.here' (in container '')",
    ]


def test_result_type_is_checked_at_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "p.yaml", HEADER.format(name="p") + "  validations:\n    - expression: \"'text'\"\n")
    code, lines = lint(tmp_path, capsys)
    assert code == 1
    assert lines == [f"{path}:13:20: CEL compile error: expression must evaluate to bool, but it evaluates to string"]


def test_unknown_field_and_missing_field_and_bad_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEADER.format(name="p") + (
        "  validation:\n"              # line 12: unknown field (typo)
        "    - expression: 'true'\n"
        "  failurePolicy: Sometimes\n"  # line 14: bad enum value
    )
    path = write(tmp_path, "p.yaml", text)
    code, lines = lint(tmp_path, capsys)
    assert code == 1
    assert f"{path}:12:3: unknown field 'validation'" in lines
    assert any(line.startswith(f"{path}:14:18: spec.failurePolicy:") for line in lines), lines


def test_yaml_syntax_error_and_duplicate_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "a.yaml", "apiVersion: v1\nkind: [\n")
    duplicate = write(tmp_path, "b.yaml", "apiVersion: v1\nkind: Namespace\nkind: Namespace\nmetadata: {name: x}\n")
    code, lines = lint(tmp_path, capsys)
    assert code == 1
    assert any(line.startswith(f"{bad}:3:1: YAML syntax error") for line in lines), lines
    assert f"{duplicate}:3:1: duplicate key 'kind'" in lines


def test_unknown_kind_and_duplicate_policy_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = "  validations:\n    - expression: 'true'\n"
    first = write(tmp_path, "a.yaml", HEADER.format(name="same") + body)
    second = write(tmp_path, "b.yaml", HEADER.format(name="same") + body + "---\napiVersion: v9\nkind: Thing\n")
    code, lines = lint(tmp_path, capsys)
    assert code == 1
    assert f"{second}:1:1: policy name 'same' is already used at {first}:1" in lines
    assert any(line.startswith(f"{second}:16:7: unknown kind v9/Thing") for line in lines), lines


def test_deny_with_warn_and_do_nothing_policies_are_rejected(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "a.yaml", HEADER.format(name="a").replace("spec:\n", "spec:\n  validationActions: [Deny, Warn]\n")
          + "  validations:\n    - expression: 'true'\n")
    write(tmp_path, "b.yaml", HEADER.format(name="b"))
    code, lines = lint(tmp_path, capsys)
    assert code == 1
    assert any("cannot hold both Deny and Warn" in line for line in lines), lines
    assert any("the policy does nothing" in line for line in lines), lines


def test_python_syntax_error_and_import_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    syntax = write(tmp_path, "a.py", "from webhook import validating\n\ndef broken(:\n    pass\n")
    raising = write(tmp_path, "b.py", "import json\n\nraise ValueError('at import')\n")
    code, lines = lint(tmp_path, capsys)
    assert code == 1
    assert any(line.startswith(f"{syntax}:3:") and "Python syntax error" in line for line in lines), lines
    assert f"{raising}:3:1: importing the module raised ValueError: at import" in lines


def test_python_policy_with_a_bad_rule_names_the_function_line(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "a.py", (
        "from webhook import validating\n\n\n"
        "@validating(resources=['pods'], operations=['DESTROY'])\n"
        "def check(request):\n    return None\n"))
    code, lines = lint(tmp_path, capsys)
    assert code == 1
    assert lines[0].startswith(f"{path}:4:1: policy 'check': resourceRules.0.operations.0:")


def test_engine_specific_function_is_refused_at_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "a.yaml", HEADER.format(name="a") + "  validations:\n    - expression: \"'a'.quote() == 'a'\"\n")
    code, lines = lint(tmp_path, capsys, "--cel-engine", "cel-python")
    assert code == 1
    assert "the cel-python engine has no function quote" in lines[0]


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_deep_nesting_refused_on_unbounded_engines_and_authorizer_everywhere(tmp_path: Path, engine: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    nested = "object.spec.containers.all(a, a.env.all(b, b.name.split('').all(c, [1].exists(d, d == 1))))"
    path = write(tmp_path, "p.yaml", HEADER.format(name="deep") + f'  validations:\n    - expression: "{nested}"\n'
                 "    - expression: \"authorizer.group('').resource('pods').allowed()\"\n")
    code, lines = lint(tmp_path, capsys, "--cel-engine", engine)
    assert code == 1
    nesting_refused = any(line.startswith(f"{path}:13:19: comprehensions (all, exists, map, filter ...) nest 4 "
                                          "deep; the limit is 3") for line in lines)
    # The builtin engine bounds evaluation by Kubernetes' cost limit, as the API server does: any nesting loads.
    assert nesting_refused is (engine != "builtin"), lines
    assert any(line.startswith(f"{path}:14:19: `authorizer` needs a connection to a cluster") for line in lines)
    three = nested.replace("[1].exists(d, d == 1)", "true")
    write(tmp_path, "p.yaml", HEADER.format(name="ok") + f'  validations:\n    - expression: "{three}"\n')
    assert lint(tmp_path, capsys, "--cel-engine", engine)[0] == 0


def test_yaml_aliases_are_refused_at_their_use_without_expanding_them(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A 'billion laughs': nine levels of nine aliases would expand to 9^9 strings (it ran past 30 s and 2.6 GB)."""
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, 9)]
    path = write(tmp_path, "bomb.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n" +
                 "".join(f"  {level}\n" for level in levels))
    code, lines = lint(tmp_path, capsys)
    assert code == 1
    refused = [line for line in lines if "used again through a YAML alias" in line]
    assert len(refused) == 8  # one per anchored value, at the anchor (a0 to a7; a8 is not used again)
    assert refused[0] == (f"{path}:5:7: this value is used again through a YAML alias (*name); aliases are not "
                          "allowed: write the value out where it is used")


def test_a_link_out_of_the_policy_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A link to a directory elsewhere (a system directory with a `sitecustomize.py` was picked up as a policy)
    is refused; links that stay inside, as a ConfigMap volume's `..data` links do, load."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "sitecustomize.py").write_text("import os\n")
    policies = tmp_path / "policies"
    data = policies / "..2026_12_02_00_00_00.000000000"
    data.mkdir(parents=True)
    (data / "ok.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n")
    (policies / "..data").symlink_to(data.name)
    (policies / "ok.yaml").symlink_to("..data/ok.yaml")
    assert lint(policies, capsys)[0] == 0
    (policies / "system").symlink_to(outside)
    code, lines = lint(policies, capsys)
    assert code == 1
    assert f"{policies / 'system' / 'sitecustomize.py'}:1:1: links to {outside.resolve() / 'sitecustomize.py'}, " \
           "outside the policy directory; policy files must be inside it" in lines, lines
