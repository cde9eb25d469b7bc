"""The module layering of docs/architecture.md, checked from the source's import statements."""

import ast
import pathlib
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "faceaging"

# Lower layers never import higher ones (docs/architecture.md draws the same list).
LAYERS = [
    ("foundation", ["files", "workdir", "config", "schedules", "pixels", "batching", "image_io",
                    "grids", "perf", "weight_files", "image_metrics", "feature_metrics", "mesh",
                    "config_checks", "workdir_lock", "stopping", "cell_stats", "augment"]),
    ("data", ["datasets", "datasets.utkface", "datasets.synthfaces", "input_pipeline", "align"]),
    ("model", ["conv", "models", "losses", "train_state", "small_models", "inception",
               "face_embedding"]),
    ("step", ["steps", "aging", "checkpointing", "writer", "age_guide"]),
    ("train loop", ["train"]),
    ("run", ["run"]),
    ("tools", ["predict", "age_estimator", "trait_classifier", "evaluators", "evaluators.common",
               "evaluators.age", "evaluators.cycle", "evaluators.identity", "evaluators.fid_kid",
               "evaluators.synthfaces_truth", "evaluators.traits", "evaluators.geometry",
               "evaluators.two_sample", "evaluate", "dataset_stats",
               "contact_sheet"]),
    ("entry points", ["run_all", "main"]),
]
LAYER_OF = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}
# What serves a trained run must work without the training loop.
INFERENCE = ["run", "aging", "predict", "evaluate", "evaluators", "age_estimator",
             "trait_classifier", *[m for m in LAYER_OF if m.startswith("evaluators.")]]


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(path: pathlib.Path) -> set[str]:
    """faceaging modules imported by the file at ``path`` (names relative to the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name[len("faceaging."):] for a in node.names if a.name.startswith("faceaging.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "faceaging":
            base = node.module[len("faceaging."):] if node.module != "faceaging" else ""
            if base:
                found.add(base)
            for alias in node.names:
                name = f"{base}.{alias.name}" if base else alias.name
                if _is_module(name):
                    found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    return {_module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py") if _module_name(p)}


def test_every_module_has_a_layer():
    assert sorted(set(graph()) - set(LAYER_OF)) == []
    assert sorted(set(LAYER_OF) - set(graph())) == []


def test_no_module_imports_a_higher_layer():
    upward = [f"{module} ({LAYERS[LAYER_OF[module]][0]}) imports {dep} ({LAYERS[LAYER_OF[dep]][0]})"
              for module, deps in graph().items() for dep in deps if LAYER_OF[dep] > LAYER_OF[module]]
    assert upward == []


def test_inference_never_reaches_the_training_loop():
    edges = graph()
    for start in INFERENCE:
        seen, todo = set(), [start]
        while todo:
            for dep in edges[todo.pop()] - seen:
                seen.add(dep)
                todo.append(dep)
        assert "train" not in seen, f"{start} imports faceaging.train (directly or through others)"


def test_the_checker_sees_upward_and_transitive_imports(tmp_path, monkeypatch):
    """The checks above would fail on a violation: a foundation module importing the loop."""
    fake = tmp_path / "faceaging"
    for module in graph():
        target = fake.joinpath(*module.split(".")).with_suffix(".py")
        if (PACKAGE.joinpath(*module.split(".")) / "__init__.py").exists():
            target = fake.joinpath(*module.split("."), "__init__.py")
        target.parent.mkdir(parents=True, exist_ok=True)
        source = PACKAGE.joinpath(*target.relative_to(fake).parts).read_text()
        target.write_text(source + ("\nfrom faceaging import train\n" if module == "pixels" else ""))
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    import pytest
    with pytest.raises(AssertionError, match="pixels .foundation. imports train"):
        test_no_module_imports_a_higher_layer()
    with pytest.raises(AssertionError, match="imports faceaging.train"):
        test_inference_never_reaches_the_training_loop()
