"""No process is started through a shell, anywhere in src/ and bench/ (read with ast, not grep).

Forbidden: ``shell=`` anything but False on any call; ``os.system``, ``os.popen``, ``os.spawn*``,
``subprocess.getoutput``/``getstatusoutput`` and ``asyncio.create_subprocess_shell`` (they always use a
shell); and a command given as a string (a literal, an f-string, ``%``/``+``/``.format`` of strings) to
``subprocess.run/Popen/call/check_call/check_output``, ``os.exec*`` or ``asyncio.create_subprocess_exec``.
A command held in a variable must be a list: every assignment to it in its function is a list or tuple
display (or list(...)/sorted(...), or a list concatenation), or it is a parameter annotated as a list,
tuple or sequence.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast
ROOT = Path(__file__).resolve().parents[2]
SPAWN = {("subprocess", n) for n in ("run", "Popen", "call", "check_call", "check_output")} | {
    ("os", n) for n in ("execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe")} | {
    ("asyncio", "create_subprocess_exec")}
SHELL_ONLY = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
              ("asyncio", "create_subprocess_shell")} | {
    ("os", n) for n in ("spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe")}
LIST_ANNOTATIONS = ("list", "List", "tuple", "Tuple", "Sequence", "Iterable")


def _callee(node: ast.Call) -> tuple[str, str] | None:
    f = node.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f.value.id, f.attr
    return None


def _is_stringy(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str | bytes)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return _is_stringy(node.left) or _is_stringy(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
        return _is_stringy(node.func.value)
    return False


def _is_list(node: ast.AST, scope: ast.AST | None, returns: dict[str, str] | None = None) -> bool:
    if isinstance(node, ast.List | ast.Tuple | ast.ListComp):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("list", "tuple", "sorted"):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and returns is not None:
        return any(t in returns.get(node.func.id, "") for t in LIST_ANNOTATIONS)  # a function returning a list
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_list(node.left, scope) or _is_list(node.right, scope)
    if isinstance(node, ast.IfExp):
        return _is_list(node.body, scope) and _is_list(node.orelse, scope)
    if isinstance(node, ast.Name) and scope is not None:
        return _name_is_list(node.id, scope)
    return False


def _name_is_list(name: str, scope: ast.AST) -> bool:
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
        args = scope.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            if a.arg == name:
                return a.annotation is not None and any(t in ast.unparse(a.annotation) for t in LIST_ANNOTATIONS)
    values = []
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            values += [node.value for t in node.targets if isinstance(t, ast.Name) and t.id == name]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            values.append(node.value) if node.value is not None else None
    return bool(values) and all(v is not None and _is_list(v, None) for v in values)


def _scopes(tree: ast.Module) -> dict[ast.Call, ast.AST]:
    """Each call -> the innermost function around it (or the module)."""
    out: dict[ast.Call, ast.AST] = {}

    def visit(node: ast.AST, scope: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else scope
            if isinstance(child, ast.Call):
                out[child] = scope
            visit(child, inner)

    visit(tree, tree)
    return out


def problems(source: str, where: str) -> list[str]:
    tree = ast.parse(source)
    returns = {f.name: ast.unparse(f.returns) for f in tree.body
               if isinstance(f, ast.FunctionDef) and f.returns is not None}
    found = []
    for call, scope in _scopes(tree).items():
        at = f"{where}:{call.lineno}"
        for kw in call.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                found.append(f"{at}: shell={ast.unparse(kw.value)}")
        name = _callee(call)
        if name in SHELL_ONLY:
            found.append(f"{at}: {'.'.join(name)} runs a shell")
        elif name in SPAWN:
            cmd = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "args"), None)
            if name[0] == "os":  # os.exec*(file, args): the argument list comes second
                cmd = call.args[1] if len(call.args) > 1 else None
            if cmd is None:
                continue
            if _is_stringy(cmd):
                found.append(f"{at}: {'.'.join(name)} gets a string command {ast.unparse(cmd)[:60]}")
            elif name[1] != "create_subprocess_exec" and not _is_list(cmd, scope, returns):
                found.append(f"{at}: {'.'.join(name)} gets {ast.unparse(cmd)[:60]}, not a list kvmkit can see")
    return found


def test_no_subprocess_goes_through_a_shell() -> None:
    files = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "bench").rglob("*.py")])
    assert len(files) > 50
    found = [p for f in files for p in problems(f.read_text(), str(f.relative_to(ROOT)))]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("code", [
    "import subprocess\nsubprocess.run('ls -l', shell=True)",
    "import subprocess\nsubprocess.run(['ls'], shell=1)",
    "import os\nos.system('reboot')",
    "import os\nos.popen('id').read()",
    "import subprocess\nsubprocess.check_output(f'qemu-img info {path}')",
    "import subprocess\nsubprocess.Popen('virsh ' + name)",
    "import subprocess\nsubprocess.call('rm -rf %s' % d)",
    "import subprocess\nsubprocess.run('x {}'.format(y))",
    "import subprocess\ndef f():\n    cmd = 'ls ' + x\n    subprocess.run(cmd)",
    "import subprocess\ndef f(cmd: str):\n    subprocess.run(cmd)",
    "import subprocess\nsubprocess.getoutput('id')",
    "import os\nos.spawnlp(os.P_WAIT, 'ls', 'ls')",
    "import asyncio\nasyncio.create_subprocess_shell('id')",
    "import subprocess\ndef c() -> str:\n    return 'ls'\nsubprocess.run(c())",
])
def test_the_scan_catches_shell_use(code: str) -> None:
    assert problems(code, "x.py"), code


@pytest.mark.parametrize("code", [
    "import subprocess\nsubprocess.run(['qemu-img', 'info', path], check=True)",
    "import subprocess\ndef f(cmd: list[str]):\n    subprocess.run(cmd)",
    "import subprocess\ndef f():\n    cmd = ['ip']\n    cmd += ['-n', ns]\n    subprocess.run(cmd)",
    "import subprocess\nsubprocess.run([*cmd, src], shell=False)",
    "import os, sys\nos.execv(sys.executable, [sys.executable, '-m', 'kvmkit'])",
    "import subprocess\ndef c() -> list[str]:\n    return ['ls']\nsubprocess.run(c())",
])
def test_the_scan_lets_argument_lists_through(code: str) -> None:
    assert problems(code, "x.py") == [], code
