"""The package's layout is its architecture: every room (a folder of charrnn, or a base module at
its top) sits on a floor, and imports only run down a floor or across to another room of the
same floor, never up, and never round in a cycle. Read from the source, nothing is imported."""

import ast
from pathlib import Path

import charrnn

PACKAGE = Path(charrnn.__file__).parent
FLOORS = [
    {"charrnn", "errors", "signals", "user_text", "config", "extras"},  # what every stage shares
    {"compute", "files"},  # the hardware and libraries; writing files safely
    {"data", "nn"},  # text to ids; the model
    {"training", "generate"},  # uses of the model: learning it, drawing text from it
    {"score", "runs", "inspect"},  # eval (uses training's shards); the run directory; what the cells learned
    {"export", "serve", "bench"},  # above the core
    {"cli"},  # parses and delegates
    {"launch", "__main__"},  # the entry point
]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def room(module: str) -> str:
    """charrnn.training.loop -> training; charrnn.config -> config; charrnn -> charrnn."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "charrnn"


def imports() -> set[tuple[str, str]]:
    """(importing module, imported module) for every import of charrnn by charrnn."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("charrnn", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "charrnn":
                for alias in node.names:  # `from charrnn.x import y`: y may be a module of x
                    candidate = f"{node.module}.{alias.name}"
                    named = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or \
                        (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                    found.add((module, candidate if named else node.module))
            elif isinstance(node, ast.Import):
                found |= {(module, alias.name) for alias in node.names if alias.name.split(".")[0] == "charrnn"}
    return found


def test_every_room_has_a_floor():
    rooms = {path.name if path.is_dir() else path.stem for path in PACKAGE.iterdir()
             if (path.is_dir() and (path / "__init__.py").exists()) or path.suffix == ".py"}
    assert rooms - {"__init__", "configs"} <= set(FLOOR), sorted(rooms - set(FLOOR) - {"__init__", "configs"})


def test_imports_never_run_up_a_floor():
    upward = sorted(f"{a} -> {b}" for a, b in imports() if FLOOR[room(b)] > FLOOR[room(a)])
    assert upward == []


def test_rooms_import_each_other_without_cycles():
    edges = {(room(a), room(b)) for a, b in imports() if room(a) != room(b)}
    graph = {r: {b for a, b in edges if a == r} for r in FLOOR}
    visiting, done = set(), set()

    def visit(node, path):
        assert node not in visiting, " -> ".join([*path, node])
        if node in done:
            return
        visiting.add(node)
        for nxt in graph[node]:
            visit(nxt, [*path, node])
        visiting.discard(node)
        done.add(node)

    for node in graph:
        visit(node, [])


def test_each_stage_says_what_it_does_and_where_to_start():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        if init.parent.name == "configs":
            continue
        assert doc and 1 <= doc.count("\n") + 1 <= 6, init
        named = [word.strip("`,.():") for word in doc.split() if word.strip("`,.():").endswith(".py")]
        assert any((init.parent / name).exists() for name in named), (init, "no module named to open first")
