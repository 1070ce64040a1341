"""docs/troubleshooting.md names every warning and error the daemons log, every line
the command line prints on stderr when it fails, and every message `check` can give
for a config, and nothing else: read from the code's own calls, both ways.

A message is compared by its skeleton: each value the code fills in (``%s``,
``{value!r}``, ...) and each one the page leaves open (``…``) is one ``…``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "troubleshooting.md"
SOURCES = ("smtp_balancer", "policyd", "milter")
LEVELS = {"warning", "error", "critical", "exception"}
LOGGERS = {"log", "notes"}
PLACEHOLDER = re.compile(r"%(?:\.\d+)?[sdrfi]")
GAP = "…"


def skeleton(text: str) -> str:
    return re.sub(f"(?:{GAP}\\s*)+(?={GAP})", "", PLACEHOLDER.sub(GAP, text.replace("%%", "%"))).strip()


def text_of(node: ast.expr, constants: dict[str, str]) -> str | None:
    """The message a call's argument makes, with a gap for each value filled in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = [text_of(v, constants) if isinstance(v, ast.Constant) else GAP for v in node.values]
        return "".join(p or "" for p in parts)
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = text_of(node.left, constants), text_of(node.right, constants)
        return None if left is None or right is None else left + right
    return None


def module_constants(trees: list[ast.Module]) -> dict[str, str]:
    """Upper-case module-level string constants, by name (a message kept in one)."""
    out: dict[str, str] = {}
    for tree in trees:
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if (
                        isinstance(target, ast.Name)
                        and target.id.isupper()
                        and isinstance(node.value.value, str)
                    ):
                        out[target.id] = node.value.value
    return out


def code_messages() -> dict[str, set[str]]:
    """Skeleton -> where the code says it. Log calls at warning and above (a LogLimiter's
    ``emit`` at those levels too), the feedback follower's notes, the CLI's stderr lines,
    and config validation errors."""
    files = [f for root in SOURCES for f in sorted((ROOT / root).rglob("*.py"))]
    trees = [ast.parse(f.read_text()) for f in files]
    constants = module_constants(trees)
    found: dict[str, set[str]] = {}
    unread: list[str] = []
    for path, tree in zip(files, trees, strict=True):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            args = message_args(node, where)
            for arg in args:
                text = text_of(arg, constants)
                if text is None:
                    unread.append(f"{where}:{arg.lineno}: {ast.unparse(arg)}")
                elif skeleton(text) not in ("", GAP):
                    found.setdefault(skeleton(text), set()).add(f"{where}:{arg.lineno}")
    assert unread == [], f"messages this test cannot read (write them as literals): {unread}"
    return found


def message_args(node: ast.AST, where: str) -> list[ast.expr]:
    if not isinstance(node, ast.Call):
        return []
    func = node.func
    if isinstance(func, ast.Attribute):
        base = func.value
        name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
        level = node.args[0] if func.attr == "emit" and name == "notes" and len(node.args) > 2 else None
        if isinstance(level, ast.Attribute) and level.attr.lower() in LEVELS:
            # LogLimiter.emit(logging.ERROR, kind, format, ...): the format is the third argument
            return [node.args[2]]
        if func.attr in LEVELS and name in LOGGERS and node.args:
            # LogLimiter.warning(kind, format, ...): the format is the second argument
            return [node.args[1] if name == "notes" and len(node.args) > 1 else node.args[0]]
    if isinstance(func, ast.Name) and func.id == "Note" and len(node.args) == 2:
        kind = node.args[0]
        return [] if isinstance(kind, ast.Constant) and kind.value == "waiting" else [node.args[1]]
    to_stderr = any(k.arg == "file" and ast.unparse(k.value) == "sys.stderr" for k in node.keywords)
    if isinstance(func, ast.Name) and func.id == "print" and to_stderr:
        return list(node.args[:1])
    if where.startswith("smtp_balancer/config/") and isinstance(func, ast.Name) and func.id == "ValueError":
        return list(node.args[:1])
    return []


def page_messages() -> set[str]:
    """The first cell of each table row of the page: one message, in a code span."""
    out = set()
    for line in PAGE.read_text().splitlines():
        m = re.match(r"\| (``?)(.+?)\1 \|", line)  # a message with a backtick is in a double one
        if m:
            out.add(skeleton(m.group(2)))
    return out


def test_the_page_names_every_message_and_only_those() -> None:
    code, page = code_messages(), page_messages()
    missing = {text: sorted(where) for text, where in code.items() if text not in page}
    assert not missing, f"messages the troubleshooting page lacks: {missing}"
    assert page <= set(code), f"messages on the page that no code says: {page - set(code)}"


def test_the_skeleton_ignores_how_a_value_is_formatted() -> None:
    assert skeleton("Redis %s unusable (%s: %s); deciding from YAML for %.1fs") == (
        "Redis … unusable (…: …); deciding from YAML for …s"
    )
    assert skeleton("a %d%% rate") == "a …% rate"
    tree = ast.parse('log.warning(f"x {a!r} y")\nprint(f"smtp-balancer: {exc}", file=sys.stderr)')
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and message_args(n, "any")]
    assert [skeleton(text_of(message_args(c, "any")[0], {}) or "") for c in calls] == [
        "x … y",
        "smtp-balancer: …",
    ]
